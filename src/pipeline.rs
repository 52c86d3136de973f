//! The apply pipeline: validate → read → diff → backup → write → restart →
//! health, with a conflict guard and automatic rollback, written once over
//! [`crate::remote::RemoteOps`].

//! Unified diff of the remote config against the new one (imara-diff).
//!
//! Owns: a pure function from (old bytes, new bytes, labels) to a unified
//! diff with 3 lines of context that `patch -p0` applies, and its optional
//! coloring. Identical inputs give an empty diff.

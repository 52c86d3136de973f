//! Health check: polls `GET <base_url><path>` (default `/v1/models`) with
//! hyper until it answers 200, with attempts, delay and a per-attempt timeout.

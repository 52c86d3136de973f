//! Presentation: human output (colored only on a TTY and without `NO_COLOR`)
//! and `--json` objects. Secrets never reach either.

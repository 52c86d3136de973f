//! The inventory file: `defaults:` and named `hosts:` carrying target flags.

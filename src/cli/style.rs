//! Terminal styling: color only on a TTY and without `NO_COLOR`.

use std::io::IsTerminal;

/// Whether to color a stream.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Style {
    pub fn for_stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && !no_color(),
        }
    }

    pub fn for_stderr() -> Style {
        Style {
            color: std::io::stderr().is_terminal() && !no_color(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn ok(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn err(&self, s: &str) -> String {
        self.paint("1;31", s)
    }
    pub fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

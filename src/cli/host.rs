//! The one way a command reaches a host: [`Settings`] → connected
//! [`Session`] → the [`AnyRemote`] for the configured mode. Every failure on
//! the way is a connect failure (exit 3), whichever command asked.

use swapcfg::remote::{AnyRemote, RemoteOptions};
use swapcfg::transport::Session;

use super::render::Failure;
use super::settings::{Restart, Settings};
use swapcfg::pipeline::Step;

/// A connected host.
pub struct Host {
    pub session: Session,
    pub config_path: String,
}

impl Host {
    /// Connect (host key, authentication) within the connect timeout,
    /// through the jump hosts when there are any (each hop within its own
    /// connect timeout).
    pub async fn connect(settings: &Settings, config_path: &str) -> Result<Host, Failure> {
        let session = swapcfg::transport::connect_via(&settings.jumps, &settings.connect)
            .await
            .map_err(|e| Failure::at(Step::Connect, e))?;
        Ok(Host {
            session,
            config_path: config_path.to_string(),
        })
    }

    /// Open the remote config in the configured mode (SFTP subsystem, shell
    /// or wrapper).
    pub async fn remote(
        &self,
        settings: &Settings,
        opts: RemoteOptions,
    ) -> Result<AnyRemote<'_>, Failure> {
        // The wrapper choices come from the settings, whoever built `opts`.
        let opts = RemoteOptions {
            unverified_wrapper_write: settings.unverified_wrapper_write,
            wrapper_restart: matches!(settings.restart, Restart::Command(_)),
            ..opts
        };
        let restart = match &settings.restart {
            Restart::Command(c) => Some(c.as_str()),
            Restart::Skip | Restart::Unset => None,
        };
        AnyRemote::open_with_restart(
            &self.session,
            settings.mode,
            &self.config_path,
            opts,
            restart,
        )
        .await
        .map_err(|e| Failure::at(Step::Connect, e))
    }

    /// Close the connection politely.
    pub async fn close(self) {
        self.session.close().await;
    }
}

//! [`Session`]: one authenticated SSH connection, with exec and SFTP
//! channels multiplexed over it. Every await has a timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::ChannelMsg;

use super::gate::{self, GATE_OPEN};
use super::handler::{host_key_error, ClientHandler};
use super::{ConnectOptions, ExecOutput, TransportError};

/// One authenticated SSH connection to a host. Cheap to share by reference;
/// every channel (SFTP, exec) is multiplexed over it.
pub struct Session {
    handle: Handle<ClientHandler>,
    label: String,
    op_timeout: Duration,
    keepalive: Duration,
    started: std::time::Instant,
    /// Commands run by `exec_group` end early when this stop is requested.
    cancel: Mutex<Option<crate::stop::Stop>>,
    /// The jump hosts this connection rides on (kept open while it lives).
    via: Vec<Session>,
    /// A session channel opened ahead of time (beside the SFTP channel), so
    /// the next command does not wait a round trip for its channel.
    spare: Mutex<Option<russh::Channel<client::Msg>>>,
    /// A restart command already started on its own channel and held at a
    /// gate (see [`Session::open_spare_channel`]): `(command, channel)`.
    primed: Mutex<Option<(String, russh::Channel<client::Msg>)>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.label)
            .finish()
    }
}

/// Keepalives every third of `dead_after`; after three unanswered ones the
/// session ends, so a silent host is noticed within `dead_after`.
fn client_config(dead_after: Duration) -> Arc<client::Config> {
    let every = (dead_after / 3).max(Duration::from_millis(200));
    Arc::new(client::Config {
        keepalive_interval: Some(every),
        keepalive_max: 2,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    })
}

impl Session {
    /// Connect, verify the host key, authenticate; all within
    /// `opts.connect_timeout`.
    pub async fn connect(opts: &ConnectOptions) -> Result<Session, TransportError> {
        let label = opts.target.to_string();
        let phase = Arc::new(Mutex::new("resolving the host name"));
        let secs = opts.connect_timeout.as_secs().max(1);
        match tokio::time::timeout(
            opts.connect_timeout,
            Self::connect_inner(opts, &label, phase.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(TransportError::ConnectTimeout {
                target: label,
                phase: phase.lock().map(|p| *p).unwrap_or("connecting"),
                secs,
            }),
        }
    }

    async fn connect_inner(
        opts: &ConnectOptions,
        label: &str,
        phase: Arc<Mutex<&'static str>>,
    ) -> Result<Session, TransportError> {
        let set_phase = |p: &'static str| {
            if let Ok(mut g) = phase.lock() {
                *g = p;
            }
        };
        let t = &opts.target;
        let addrs: Vec<_> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| TransportError::Resolve {
                host: t.host.clone(),
                message: e.to_string(),
            })?
            .collect();
        set_phase("opening the TCP connection");
        let mut last_err = None;
        let mut stream = None;
        for addr in &addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let stream = match (stream, last_err) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(TransportError::Refused {
                    target: label.to_string(),
                    port: t.port,
                })
            }
            (None, e) => {
                return Err(TransportError::Connect {
                    target: label.to_string(),
                    message: e
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "no address found".into()),
                })
            }
        };
        let stream = super::tcp::AckingStream::new(stream);
        Self::establish(opts, label, stream, set_phase).await
    }

    /// Handshake (host key checked against known_hosts) and authentication
    /// over an already open byte stream: a TCP connection, or a
    /// `direct-tcpip` channel of a jump host. No timeout of its own: the
    /// caller bounds it.
    pub(super) async fn establish<S>(
        opts: &ConnectOptions,
        label: &str,
        stream: S,
        set_phase: impl Fn(&'static str),
    ) -> Result<Session, TransportError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let t = &opts.target;
        set_phase("exchanging SSH keys");
        let verdict = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            host_name: t.known_hosts_name(),
            known_hosts: opts.known_hosts.clone(),
            policy: opts.host_key_policy,
            verdict: verdict.clone(),
        };
        let mut handle =
            match client::connect_stream(client_config(opts.keepalive), stream, handler).await {
                Ok(h) => h,
                Err(e) => {
                    let v = verdict.lock().ok().and_then(|v| v.clone());
                    return Err(host_key_error(label, opts, v, e));
                }
            };
        set_phase("authenticating");
        super::auth::authenticate(&mut handle, opts, label).await?;
        Ok(Session {
            handle,
            label: label.to_string(),
            op_timeout: opts.op_timeout,
            keepalive: opts.keepalive,
            started: std::time::Instant::now(),
            cancel: Mutex::new(None),
            via: Vec::new(),
            spare: Mutex::new(None),
            primed: Mutex::new(None),
        })
    }

    /// This session, riding on the jump-host sessions `via` (kept open as
    /// long as it is).
    pub(super) fn riding(mut self, via: Vec<Session>) -> Session {
        self.via = via;
        self
    }

    /// Open a `direct-tcpip` channel to `host:port` from this host (the
    /// jump host connects; nothing runs on it).
    pub(super) async fn direct_tcpip(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::Channel<russh::client::Msg>, russh::Error> {
        self.handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
    }

    /// Run `command` on an exec channel, feeding `stdin` (then EOF) when
    /// given, collecting at most `max_output` bytes of each stream, within
    /// `timeout`.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, TransportError> {
        let run = async {
            let ch = self.channel().await?;
            ch.exec(true, command)
                .await
                .map_err(|e| self.lost("exec", e))?;
            // Send stdin while reading the replies: a command that ends
            // without reading all its input (it refused the upload) must
            // not leave the upload waiting for window space until the
            // timeout fires.
            let (mut reader, writer) = ch.split();
            let send = async {
                if let Some(data) = stdin {
                    writer
                        .data(data)
                        .await
                        .map_err(|e| self.lost("exec stdin", e))?;
                }
                writer.eof().await.map_err(|e| self.lost("exec", e))
            };
            let recv = self.collect(&mut reader, max_output, |_| {});
            tokio::pin!(send, recv);
            tokio::select! {
                out = &mut recv => out,
                sent = &mut send => {
                    sent?;
                    recv.await
                }
            }
        };
        let run = self.until_closed(run);
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                target: self.label.clone(),
                op: format!("command {:?}", truncate_for_message(command)),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Run `command` (a POSIX `sh` command line) in its own process group on
    /// the host (`setsid` where present) within `timeout`. When the timeout
    /// fires, the whole group is stopped over a second channel (TERM, then
    /// KILL a second later), so nothing of it keeps running.
    pub async fn exec_group(
        &self,
        command: &str,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, TransportError> {
        let Some(primed) = self.take_primed(command) else {
            return self
                .run_group(command, None, &GATE_OPEN[..], timeout, max_output)
                .await;
        };
        match self
            .run_group(command, Some(primed), &GATE_OPEN[..], timeout, max_output)
            .await
        {
            // The waiting shell ended before its gate opened (its rc files
            // exited, or it was ended as the line went out): nothing ran,
            // so run the command on a channel of its own.
            Ok(o) if !o.gate_opened => {
                self.run_group(command, None, &GATE_OPEN[..], timeout, max_output)
                    .await
            }
            other => other,
        }
    }

    /// [`Session::exec_group`] for the command primed on this session
    /// ([`Session::open_spare_channel`]), its gate told to let it run only
    /// once the watched file holds exactly `content` (its POSIX `cksum`
    /// matches; the host polls for up to [`gate::AFTER_WAIT`]). The caller
    /// sends the change that puts `content` there in the same flight: the
    /// command then starts without a round trip of its own. `None`: no
    /// primed channel for `command` (nothing was sent; run it the ordinary
    /// way once the change is made). A gate that gave up ran nothing
    /// ([`ExecOutput::gate_opened`] is false).
    pub async fn exec_group_after(
        &self,
        command: &str,
        content: &[u8],
        timeout: Duration,
        max_output: usize,
    ) -> Option<Result<ExecOutput, TransportError>> {
        let primed = self.take_primed(command)?;
        // A channel the host already closed (it ended the waiting shell)
        // refuses the line: nothing ran, and nothing may start before the
        // change is made — the caller runs the command afterwards.
        let line = gate::after_line(content);
        primed.data(line.as_bytes()).await.ok()?;
        Some(
            self.run_group(command, Some(primed), b"", timeout, max_output)
                .await,
        )
    }

    /// The channel primed with `command`, taken (it serves one run).
    fn take_primed(&self, command: &str) -> Option<russh::Channel<client::Msg>> {
        self.primed.lock().ok().and_then(|mut p| {
            if p.as_ref().is_some_and(|(c, _)| c == command) {
                p.take().map(|(_, ch)| ch)
            } else {
                None
            }
        })
    }

    async fn run_group(
        &self,
        command: &str,
        primed: Option<russh::Channel<client::Msg>>,
        gate_line: &[u8],
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, TransportError> {
        let pgid = Mutex::new(None::<u32>);
        let opened = std::sync::atomic::AtomicBool::new(false);
        let run = async {
            let (ch, gated) = self.start_group(command, primed, gate_line).await?;
            let (mut reader, _writer) = ch.split();
            // Lines before the wrapper's first one are the host's (rc files
            // may write to stderr): the marker is looked for line by line.
            let mut marker_seen = false;
            let mut scanned = 0;
            let mut out = self
                .collect(&mut reader, max_output, |stderr: &mut Vec<u8>| {
                    while !marker_seen {
                        let Some(nl) = stderr[scanned..].iter().position(|&b| b == b'\n') else {
                            return;
                        };
                        let end = scanned + nl;
                        let line = String::from_utf8_lossy(&stderr[scanned..end]).into_owned();
                        if let Some(n) = line.strip_prefix("swapcfg-pgid ") {
                            marker_seen = true;
                            if let (Ok(n), Ok(mut g)) = (n.trim().parse(), pgid.lock()) {
                                *g = Some(n);
                            }
                            stderr.drain(scanned..=end);
                        } else if line == gate::GAVE_UP {
                            marker_seen = true;
                            stderr.drain(scanned..=end);
                        } else if line == gate::OPENED {
                            opened.store(true, std::sync::atomic::Ordering::Relaxed);
                            stderr.drain(scanned..=end);
                        } else {
                            scanned = end + 1;
                        }
                    }
                })
                .await?;
            out.gate_opened = !gated || opened.load(std::sync::atomic::Ordering::Relaxed);
            Ok(out)
        };
        let run = self.until_closed(run);
        // A stop request (Ctrl-C) ends the command the way a timeout does,
        // so the caller's next restart never runs beside this one.
        // Only a stop requested while this command runs ends it, and never
        // during a rollback: the rollback's restart runs to its end (a
        // second signal exits the process instead).
        let cancel = self
            .cancel
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| !c.requested() && c.phase() != crate::stop::Phase::RollingBack);
        let cancelled = async {
            match &cancel {
                Some(stop) => stop.wait().await,
                None => std::future::pending().await,
            }
        };
        let mut run = Box::pin(run);
        let ended = tokio::select! {
            r = tokio::time::timeout(timeout, &mut run) => r.ok(),
            () = cancelled => None,
        };
        let was_cancelled = cancel.as_ref().is_some_and(|c| c.requested());
        match ended {
            Some(r) => r,
            None => {
                // The command's first words are its process group: when
                // they are still on their way (stopped the moment it
                // started), read on a moment for them.
                let known = || pgid.lock().ok().and_then(|g| *g).is_some();
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while !known() {
                        tokio::select! {
                            _ = &mut run => break,
                            () = tokio::time::sleep(Duration::from_millis(10)) => {}
                        }
                    }
                })
                .await;
                let group = pgid.lock().ok().and_then(|g| *g);
                let stopped = match group {
                    Some(n) => {
                        // `kill -SIG -PGID`: the form dash, bash and BusyBox
                        // all accept (`kill -SIG -- -PGID` fails in dash).
                        let kill = format!(
                            "kill -TERM -{n} 2>/dev/null || kill -TERM {n} 2>/dev/null; sleep 1; kill -KILL -{n} 2>/dev/null || kill -KILL {n} 2>/dev/null; true"
                        );
                        self.exec(&kill, None, Duration::from_secs(10), 4096)
                            .await
                            .is_ok()
                    }
                    None => false,
                };
                if was_cancelled {
                    return Err(TransportError::Cancelled {
                        target: self.label.clone(),
                        command: truncate_for_message(command),
                        stopped,
                    });
                }
                Err(TransportError::CommandTimeout {
                    target: self.label.clone(),
                    command: truncate_for_message(command),
                    secs: timeout.as_secs_f64(),
                    stopped,
                })
            }
        }
    }

    /// Start `command` as [`Session::exec_group`] runs it: through the gate
    /// of the channel primed with it when there is one (one message, no
    /// channel or exec round trip, the host's shell already started), else
    /// on a channel of its own. Stdin is closed either way. The flag: the
    /// command is held at a gate (the primed channel).
    async fn start_group(
        &self,
        command: &str,
        primed: Option<russh::Channel<client::Msg>>,
        gate_line: &[u8],
    ) -> Result<(russh::Channel<client::Msg>, bool), TransportError> {
        if let Some(ch) = primed {
            // A channel that already closed (the host ended the waiting
            // shell) refuses the data: nothing ran, so start afresh. An
            // empty `gate_line`: the caller sent the line already.
            let sent = gate_line.is_empty() || ch.data(gate_line).await.is_ok();
            if sent {
                ch.eof().await.map_err(|e| self.lost("exec", e))?;
                return Ok((ch, true));
            }
        }
        let ch = self.channel().await?;
        ch.exec(true, gate::group_command(command, None))
            .await
            .map_err(|e| self.lost("exec", e))?;
        ch.eof().await.map_err(|e| self.lost("exec", e))?;
        Ok((ch, false))
    }

    /// Collect an exec channel's output (bounded) until it closes;
    /// `on_stderr` sees stderr after each chunk (it may edit it).
    async fn collect(
        &self,
        ch: &mut russh::ChannelReadHalf,
        max_output: usize,
        mut on_stderr: impl FnMut(&mut Vec<u8>),
    ) -> Result<ExecOutput, TransportError> {
        let mut out = ExecOutput::default();
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    push_bounded(&mut out.stdout, &data, max_output, &mut out.truncated)
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    push_bounded(&mut out.stderr, &data, max_output, &mut out.truncated);
                    on_stderr(&mut out.stderr);
                }
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::Failure => {
                    return Err(TransportError::ExecRefused {
                        target: self.label.clone(),
                        message: "exec request denied".into(),
                    })
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        Ok(out)
    }

    /// `fut`, unless the connection ends first: a connection that ends while
    /// an upload waits for window space would otherwise only be noticed
    /// when the timeout fires.
    async fn until_closed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        tokio::select! {
            r = fut => r,
            () = self.closed() => Err(TransportError::Disconnected {
                target: self.label.clone(),
                op: "exec".into(),
                message: self.why_closed(),
            }),
        }
    }

    /// Open a session channel now and keep it for the next command
    /// ([`Session::exec`], [`Session::exec_group`]): run beside other work,
    /// it takes the channel's round trip off the command's path. Best
    /// effort: on failure the command opens its own channel.
    ///
    /// With `prime` (the restart command this run may run), the channel
    /// also starts it at once, held at a gate: the host's shell starts (its
    /// rc files run, often the slowest part of a command) while the apply
    /// reads and writes, and [`Session::exec_group`] later opens the gate
    /// with one line on stdin. Nothing past the gate runs without that
    /// line: stdin's end (the run wrote nothing, was stopped, or the
    /// connection closed) makes the waiting shell exit 125.
    pub async fn open_spare_channel(&self, prime: Option<(&str, &str)>) {
        let Ok(Ok(ch)) =
            tokio::time::timeout(self.op_timeout, self.handle.channel_open_session()).await
        else {
            return;
        };
        match prime {
            Some((command, watched)) => {
                if ch
                    .exec(true, gate::group_command(command, Some(watched)))
                    .await
                    .is_ok()
                {
                    if let Ok(mut p) = self.primed.lock() {
                        *p = Some((command.to_string(), ch));
                    }
                }
            }
            None => {
                if let Ok(mut spare) = self.spare.lock() {
                    *spare = Some(ch);
                }
            }
        }
    }

    /// The spare channel if there is one, else a newly opened one.
    async fn channel(&self) -> Result<russh::Channel<client::Msg>, TransportError> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        match spare {
            Some(ch) => Ok(ch),
            None => self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost("exec", e)),
        }
    }

    /// Open a channel and request the `sftp` subsystem without waiting for
    /// the host's reply: the SFTP client's first requests (INIT, and any
    /// behind it) travel right behind the request, saving a round trip.
    /// The reply comes separately; a refusal ends the stream.
    pub async fn open_sftp_stream(
        &self,
    ) -> Result<
        (
            super::channel_io::ChannelIo,
            super::channel_io::SubsystemReply,
        ),
        TransportError,
    > {
        let open = async {
            let ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost("sftp", e))?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.lost("sftp", e))?;
            Ok(super::channel_io::subsystem_stream(
                ch,
                self.label.clone(),
                self.op_timeout,
            ))
        };
        match tokio::time::timeout(self.op_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                target: self.label.clone(),
                op: "opening the SFTP subsystem".into(),
                secs: self.op_timeout.as_secs(),
            }),
        }
    }

    /// Open a channel with the `sftp` subsystem requested; the caller builds
    /// its SFTP client on `channel.into_stream()`.
    pub async fn open_sftp_channel(
        &self,
    ) -> Result<russh::Channel<russh::client::Msg>, TransportError> {
        let open = async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost("sftp", e))?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.lost("sftp", e))?;
            loop {
                match ch.wait().await {
                    Some(ChannelMsg::Success) => return Ok(ch),
                    Some(ChannelMsg::Failure)
                    | Some(ChannelMsg::Close)
                    | Some(ChannelMsg::Eof)
                    | None => {
                        return Err(TransportError::NoSftp {
                            target: self.label.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        };
        match tokio::time::timeout(self.op_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                target: self.label.clone(),
                op: "opening the SFTP subsystem".into(),
                secs: self.op_timeout.as_secs(),
            }),
        }
    }

    /// From now on, a request of `stop` ends a running `exec_group` command
    /// (its process group is stopped on the host) instead of waiting for it.
    pub fn cancel_on(&self, stop: crate::stop::Stop) {
        if let Ok(mut c) = self.cancel.lock() {
            *c = Some(stop);
        }
    }

    /// Why the connection ended, in words: the host closed it, or it did not
    /// answer keepalives for the configured time.
    pub fn why_closed(&self) -> String {
        format!(
            "the connection ended after {:.1} s (the host closed it, or answered no keepalive for {} s)",
            self.started.elapsed().as_secs_f64(),
            self.keepalive.as_secs()
        )
    }

    /// Whether the connection has ended (the host dropped it, or keepalives
    /// went unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Resolves once the connection has ended (checked every 50 ms). Races
    /// against requests whose library waits for a per-request timeout
    /// instead of noticing the end of the connection.
    pub async fn closed(&self) {
        while !self.handle.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Budget for each request on this session.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// `user@host:port` for messages.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// Close the connection politely.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
        // Then the jump hosts, nearest to the target first.
        for hop in self.via.iter().rev() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                hop.handle
                    .disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }

    fn lost(&self, op: &str, e: russh::Error) -> TransportError {
        TransportError::Disconnected {
            target: self.label.clone(),
            op: op.to_string(),
            message: e.to_string(),
        }
    }
}

fn push_bounded(buf: &mut Vec<u8>, data: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn truncate_for_message(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

//! An in-process SSH server (russh + russh-sftp) for tests, benchmarks and
//! `swapcfg demo` (behind the binary's `demo` feature; never in `xtask dist`).
//!
//! Owns: a loopback server with public-key auth, an SFTP subsystem over the
//! real filesystem (absolute paths, no chroot: tests use their own temp
//! dirs), exec handling (scripted restart commands, `/bin/sh -c` for shell
//! mode, the fixed seed-style wrapper verbs, or a real forced-command script
//! run with `$SSH_ORIGINAL_COMMAND` as sshd does), and a fault plan that
//! fails, hangs or drops the connection at a chosen operation on its Nth call
//! (for shell commands and forced commands also: drop the connection, or
//! close the command's stdin, after N bytes of its input).
//!
//! ```no_run
//! # async fn demo(client_key: russh::keys::PublicKey) -> std::io::Result<()> {
//! use swapcfg_testkit::server::*;
//! let server = TestServerBuilder::new()
//!     .authorized_key(client_key)
//!     .restart_script("systemctl restart llama-swap", ScriptedExec::exit(1, "unit failed"))
//!     .start()
//!     .await?;
//! server.set_faults(FaultPlan::one(Op::Rename, 1, FaultAction::Fail));
//! # Ok(()) }
//! ```
//!
//! Invariants: the server process never runs anything for the client except
//! `/bin/sh -c` in shell-exec mode and `/bin/sh SCRIPT` for a forced
//! command; a `Hang` fault never blocks other
//! connections and ends when its connection closes; dropping the
//! [`TestServer`] stops the listener and shuts every connection down.

mod exec;
mod sftp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An operation the fault plan can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Open,
    Read,
    Write,
    Fsync,
    Rename,
    /// `hardlink@openssh.com`.
    Link,
    Setstat,
    Stat,
    Remove,
    Readdir,
    Exec,
    Subsystem,
}

/// What happens when a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// SFTP: status `Failure`; exec: exit status 1 with a message on stderr.
    Fail,
    /// SFTP: status `PermissionDenied`; exec: exit status 1, "Permission denied".
    PermissionDenied,
    /// Never answer; ends when the connection closes.
    Hang,
    /// Shut the TCP connection down at once, mid-operation.
    Drop,
    /// Withhold the reply (the operation is not done) for this long, then
    /// shut the connection down: a host that stops answering.
    WithholdThenDrop(Duration),
    /// SFTP: do the operation, then shut the connection down without
    /// replying: the reply is lost after the work happened.
    DoThenDrop,
    /// SFTP only: wait this long, then do the operation and reply as
    /// usual (a stalled disk, a busy host). Elsewhere: no fault.
    Slow(Duration),
    /// Exec only (`/bin/sh` commands, forced commands): run the command, forward the first
    /// N bytes of its stdin, then shut the TCP connection down (a link
    /// dropped, or the client killed, mid-upload). Elsewhere: no fault.
    DropAfterStdin(usize),
    /// Exec only (`/bin/sh` commands, forced commands): forward the first N bytes of stdin,
    /// then close the command's stdin early (it sees end of input while the
    /// connection stays up; the rest of the upload is discarded).
    /// Elsewhere: no fault.
    CloseStdinAfter(usize),
}

/// One planned fault: `action` on the `nth` (1-based) call of `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub op: Op,
    pub nth: usize,
    pub action: FaultAction,
}

/// The faults to inject, checked before every operation.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub faults: Vec<Fault>,
}

impl FaultPlan {
    /// A plan with a single fault.
    pub fn one(op: Op, nth: usize, action: FaultAction) -> Self {
        FaultPlan {
            faults: vec![Fault { op, nth, action }],
        }
    }
}

/// Something a scripted command does on the host when it runs (e.g. a
/// stand-in llama-swap's restart or SIGHUP), before it answers.
pub type ExecHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The scripted outcome of an exec command.
#[derive(Clone, Default)]
pub struct ScriptedExec {
    pub exit_status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub delay: Duration,
    /// Run when the command runs (after `delay`, before the answer).
    pub hook: Option<ExecHook>,
}

impl std::fmt::Debug for ScriptedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedExec")
            .field("exit_status", &self.exit_status)
            .field("delay", &self.delay)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl ScriptedExec {
    /// Exit with `status`, printing `stderr` on stderr.
    pub fn exit(status: u32, stderr: &str) -> Self {
        ScriptedExec {
            exit_status: status,
            stderr: stderr.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// Succeed after `delay`.
    pub fn ok_after(delay: Duration) -> Self {
        ScriptedExec {
            delay,
            ..Default::default()
        }
    }

    /// Succeed at once after running `hook` (e.g.
    /// [`crate::standin::Standin::restart_hook`]).
    pub fn running(hook: ExecHook) -> Self {
        ScriptedExec {
            hook: Some(hook),
            ..Default::default()
        }
    }
}

/// Configuration shared by every connection of one server.
pub(crate) struct Shared {
    authorized: Vec<PublicKey>,
    reject_auth: bool,
    pub(crate) sftp: bool,
    pub(crate) shell_exec: bool,
    pub(crate) wrapper: Option<PathBuf>,
    pub(crate) forced_command: Option<PathBuf>,
    pub(crate) posix_rename: bool,
    pub(crate) hardlink: bool,
    pub(crate) fsync: bool,
    pub(crate) first_handle_slot: u32,
    pub(crate) shell: ShellSpec,
    scripts: Mutex<HashMap<String, ScriptedExec>>,
    faults: Mutex<FaultPlan>,
    counts: Mutex<HashMap<Op, usize>>,
    exec_log: Mutex<Vec<String>>,
}

/// The last argument of a POSIX sh command line if it is single-quoted
/// (`'…'` with `'\''` for a quote), unquoted.
fn last_quoted_arg(command: &str) -> Option<String> {
    split_last_quoted(command).map(|(_, arg)| arg)
}

/// `command` without its last single-quoted argument, and that argument
/// unquoted.
pub(crate) fn split_last_quoted(command: &str) -> Option<(&str, String)> {
    let body = command.trim_end().strip_suffix('\'')?;
    // Walk back over `'\''` escapes to the opening quote.
    let mut end = body.len();
    loop {
        let open = body[..end].rfind('\'')?;
        if body[..open].ends_with("'\\'") {
            end = open - 3;
            continue;
        }
        return Some((
            body[..open].trim_end(),
            body[open + 1..].replace("'\\''", "'"),
        ));
    }
}

/// `CMD` when `command` is `sh -c '…' swapcfg 'CMD'`, or a gated
/// `sh -c '…' swapcfg 'WATCHED' 'CMD'`.
fn wrapped_command(command: &str) -> Option<String> {
    let (rest, inner) = split_last_quoted(command)?;
    if rest.ends_with(" swapcfg") {
        return Some(inner);
    }
    let (rest, _watched) = split_last_quoted(rest)?;
    rest.ends_with(" swapcfg").then_some(inner)
}

/// How shell-exec commands are run: `program args… -c COMMAND` with extra
/// environment, the command prefixed by `prelude` (e.g. `ulimit -f 64`).
#[derive(Debug, Clone)]
pub(crate) struct ShellSpec {
    pub(crate) program: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) prelude: Option<String>,
}

impl Default for ShellSpec {
    fn default() -> Self {
        ShellSpec {
            program: vec!["/bin/sh".into()],
            env: Vec::new(),
            prelude: None,
        }
    }
}

/// A channel's data as a stream whose incoming side is drained at once
/// into an unbounded queue: the connection's task never waits for the
/// (sequential) SFTP server, which may itself be waiting to send a reply.
/// Without it, a client with many large requests and replies in flight
/// can deadlock the two (the task stops reading the socket, keepalives
/// go unanswered).
struct Drained {
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
    _write_half: russh::ChannelWriteHalf<Msg>,
    reader: JoinHandle<()>,
}

impl Drained {
    fn new(channel: Channel<Msg>) -> Drained {
        let (mut read, write) = channel.split();
        let writer = Box::pin(write.make_writer());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(msg) = read.wait().await {
                match msg {
                    // Data is queued in the guard; only a gone reader stops.
                    russh::ChannelMsg::Data { data } if tx.send(data.to_vec()).is_err() => break,
                    russh::ChannelMsg::Eof | russh::ChannelMsg::Close => break,
                    _ => {}
                }
            }
        });
        Drained {
            rx,
            buf: Vec::new(),
            pos: 0,
            writer,
            _write_half: write,
            reader,
        }
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl tokio::io::AsyncRead for Drained {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.buf.len() {
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(v) => {
                    this.buf = v;
                    this.pos = 0;
                }
                None => return std::task::Poll::Ready(Ok(())),
            }
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Drained {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

/// Lock a mutex, recovering the data if a panicking test thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Count one call of `op` and return the fault planned for it, if any.
    pub(crate) fn fault(&self, op: Op) -> Option<FaultAction> {
        let n = {
            let mut counts = lock(&self.counts);
            let c = counts.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        lock(&self.faults)
            .faults
            .iter()
            .find(|f| f.op == op && f.nth == n)
            .map(|f| f.action)
    }

    /// The scripted outcome for `command`: registered for the whole command
    /// line, or for the command a process-group wrapper hands to `sh` as its
    /// last single-quoted argument (`… swapcfg 'CMD'`).
    /// Whether `command` runs in a real shell here (no forced command, no
    /// wrapper, no script for it).
    pub(crate) fn runs_in_shell(&self, command: &str) -> bool {
        self.shell_exec
            && self.forced_command.is_none()
            && self.wrapper.is_none()
            && self.script(command).is_none()
    }

    pub(crate) fn script(&self, command: &str) -> Option<ScriptedExec> {
        let scripts = lock(&self.scripts);
        if let Some(s) = scripts.get(command) {
            return Some(s.clone());
        }
        let last = last_quoted_arg(command)?;
        scripts.get(&last).cloned()
    }
}

/// Per-connection control: how a fault drops or hangs this connection.
pub(crate) struct ConnCtl {
    /// A duplicate of the connection's socket, used to shut it down.
    socket: std::net::TcpStream,
    closed: watch::Receiver<bool>,
}

impl ConnCtl {
    /// Shut the TCP connection down in both directions right now.
    pub(crate) fn drop_connection(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Wait until the connection is closed (the `Hang` fault).
    pub(crate) async fn hang(&self) {
        let mut rx = self.closed.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Builder for a [`TestServer`].
pub struct TestServerBuilder {
    authorized: Vec<PublicKey>,
    host_key: Option<PrivateKey>,
    reject_auth: bool,
    sftp: bool,
    shell_exec: bool,
    wrapper: Option<PathBuf>,
    forced_command: Option<PathBuf>,
    posix_rename: bool,
    hardlink: bool,
    fsync: bool,
    first_handle_slot: u32,
    shell: ShellSpec,
    scripts: HashMap<String, ScriptedExec>,
    faults: FaultPlan,
    round_trip: Duration,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TestServerBuilder {
    /// A server with a random ed25519 host key, SFTP on, shell exec on.
    pub fn new() -> Self {
        TestServerBuilder {
            authorized: Vec::new(),
            host_key: None,
            reject_auth: false,
            sftp: true,
            shell_exec: true,
            wrapper: None,
            forced_command: None,
            posix_rename: true,
            hardlink: true,
            fsync: true,
            first_handle_slot: 0,
            shell: ShellSpec::default(),
            scripts: HashMap::new(),
            faults: FaultPlan::default(),
            round_trip: Duration::ZERO,
        }
    }

    /// Number SFTP handle slots from `slot` (OpenSSH starts at 0): a server
    /// whose first handle a client cannot guess.
    pub fn first_handle_slot(mut self, slot: u32) -> Self {
        self.first_handle_slot = slot;
        self
    }

    /// Serve as if across a network with this round-trip time: every chunk
    /// the server receives and every chunk it sends is held for half of it
    /// (order kept). Faults that drop the connection still cut the real
    /// socket.
    pub fn round_trip(mut self, rtt: Duration) -> Self {
        self.round_trip = rtt;
        self
    }

    /// Accept this client key (may be called several times).
    pub fn authorized_key(mut self, key: PublicKey) -> Self {
        self.authorized.push(key);
        self
    }

    /// Present this host key instead of a random one.
    pub fn host_key(mut self, key: PrivateKey) -> Self {
        self.host_key = Some(key);
        self
    }

    /// Reject every authentication attempt.
    pub fn reject_all_auth(mut self) -> Self {
        self.reject_auth = true;
        self
    }

    /// Offer the `sftp` subsystem (default on).
    pub fn sftp(mut self, enabled: bool) -> Self {
        self.sftp = enabled;
        self
    }

    /// Run exec commands that are not scripted with `/bin/sh -c` (default on).
    pub fn shell_exec(mut self, enabled: bool) -> Self {
        self.shell_exec = enabled;
        self
    }

    /// Forced-command mode: every exec is a wrapper verb acting on `config_path`.
    pub fn wrapper(mut self, config_path: impl Into<PathBuf>) -> Self {
        self.wrapper = Some(config_path.into());
        self
    }

    /// A forced command, as `command="/bin/sh SCRIPT"` in authorized_keys:
    /// every exec runs `/bin/sh script` with `SSH_ORIGINAL_COMMAND` set to
    /// the client's command, stdin/stdout/stderr wired to the channel; the
    /// SFTP subsystem is refused.
    pub fn forced_command(mut self, script: impl Into<PathBuf>) -> Self {
        self.forced_command = Some(script.into());
        self
    }

    /// Advertise and serve `posix-rename@openssh.com` (default on).
    pub fn posix_rename(mut self, enabled: bool) -> Self {
        self.posix_rename = enabled;
        self
    }

    /// Advertise and serve `hardlink@openssh.com` (default on, as
    /// OpenSSH's sftp-server does).
    pub fn hardlink(mut self, enabled: bool) -> Self {
        self.hardlink = enabled;
        self
    }

    /// Advertise and serve `fsync@openssh.com` (default on).
    pub fn fsync(mut self, enabled: bool) -> Self {
        self.fsync = enabled;
        self
    }

    /// Run shell-exec commands as `program args… -c COMMAND` instead of
    /// `/bin/sh -c COMMAND` (e.g. `["busybox", "sh"]`).
    pub fn shell_program(mut self, program: &[&str]) -> Self {
        if !program.is_empty() {
            self.shell.program = program.iter().map(|s| s.to_string()).collect();
        }
        self
    }

    /// Set an environment variable for shell-exec commands (e.g. a `PATH`
    /// holding only the tools a BusyBox host has).
    pub fn shell_env(mut self, key: &str, value: &str) -> Self {
        self.shell.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Run `prelude` (a line of shell) before every shell-exec command, in
    /// the same shell: e.g. `ulimit -f 128` to make large writes fail the
    /// way a full disk does.
    pub fn shell_prelude(mut self, prelude: &str) -> Self {
        self.shell.prelude = Some(prelude.to_string());
        self
    }

    /// Answer the exact exec `command` with `outcome` (in wrapper mode, the
    /// verb `restart` looks up the script registered as `"restart"`).
    pub fn restart_script(mut self, command: &str, outcome: ScriptedExec) -> Self {
        self.scripts.insert(command.to_string(), outcome);
        self
    }

    /// Start with this fault plan.
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }

    /// Bind 127.0.0.1:0 and start serving.
    pub async fn start(self) -> std::io::Result<TestServer> {
        let host_key = match self.host_key {
            Some(k) => k,
            None => PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| std::io::Error::other(format!("host key generation: {e}")))?,
        };
        let host_public = host_key.public_key().clone();
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            inactivity_timeout: Some(Duration::from_secs(120)),
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(Shared {
            authorized: self.authorized,
            reject_auth: self.reject_auth,
            sftp: self.sftp,
            shell_exec: self.shell_exec,
            wrapper: self.wrapper,
            forced_command: self.forced_command,
            posix_rename: self.posix_rename,
            hardlink: self.hardlink,
            fsync: self.fsync,
            first_handle_slot: self.first_handle_slot,
            shell: self.shell,
            scripts: Mutex::new(self.scripts),
            faults: Mutex::new(self.faults),
            counts: Mutex::new(HashMap::new()),
            exec_log: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sockets: Sockets = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            config,
            shared.clone(),
            sockets.clone(),
            self.round_trip / 2,
        ));
        Ok(TestServer {
            addr,
            host_public,
            shared,
            sockets,
            accept,
        })
    }
}

/// A duplicate of every open connection's socket (by connection number),
/// for shutting them all down when the server is dropped; a connection's
/// entry goes when it ends, so a long-lived server (a 500-host benchmark)
/// holds no descriptor per finished connection.
type Sockets = Arc<Mutex<HashMap<u64, std::net::TcpStream>>>;

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    sockets: Sockets,
    one_way: Duration,
) {
    let mut next = 0u64;
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some((stream, dup)) = duplicate(stream) else {
            continue;
        };
        next += 1;
        let id = next;
        if let Ok(d) = dup.try_clone() {
            lock(&sockets).insert(id, d);
        }
        let sockets = sockets.clone();
        let (closed_tx, closed_rx) = watch::channel(false);
        let ctl = Arc::new(ConnCtl {
            socket: dup,
            closed: closed_rx,
        });
        let handler = Conn {
            shared: shared.clone(),
            ctl,
            channels: HashMap::new(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            if one_way.is_zero() {
                if let Ok(running) = russh::server::run_stream(config, stream, handler).await {
                    let _ = running.await;
                }
            } else {
                // The session runs on one end of an in-memory pipe; the
                // other end is joined to the socket through two delays.
                let (near, far) = tokio::io::duplex(256 * 1024);
                let (sock_r, sock_w) = stream.into_split();
                let (far_r, far_w) = tokio::io::split(far);
                let link = async {
                    tokio::join!(
                        crate::proxy::delayed_copy(sock_r, far_w, one_way),
                        crate::proxy::delayed_copy(far_r, sock_w, one_way)
                    )
                };
                let session = async {
                    if let Ok(running) = russh::server::run_stream(config, near, handler).await {
                        let _ = running.await;
                    }
                };
                tokio::select! {
                    _ = link => {}
                    () = session => {}
                }
            }
            lock(&sockets).remove(&id);
            let _ = closed_tx.send(true);
        });
    }
}

/// Split an accepted socket into the tokio stream the session runs on and a
/// std duplicate of it that faults and shutdown use.
fn duplicate(
    stream: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std().ok()?;
    let dup = std_stream.try_clone().ok()?;
    std_stream.set_nonblocking(true).ok()?;
    let stream = tokio::net::TcpStream::from_std(std_stream).ok()?;
    Some((stream, dup))
}

/// A running in-process SSH server. Dropping it stops everything.
pub struct TestServer {
    addr: SocketAddr,
    host_public: PublicKey,
    shared: Arc<Shared>,
    sockets: Sockets,
    accept: JoinHandle<()>,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn host_public_key(&self) -> &PublicKey {
        &self.host_public
    }

    /// The known_hosts line OpenSSH would write for this server.
    pub fn known_hosts_line(&self) -> String {
        let key = self
            .host_public
            .to_openssh()
            .unwrap_or_else(|_| String::from("invalid-key"));
        format!("[{}]:{} {}", self.addr.ip(), self.addr.port(), key)
    }

    /// Replace the fault plan (call counts keep running).
    pub fn set_faults(&self, plan: FaultPlan) {
        *lock(&self.shared.faults) = plan;
    }

    /// Register or replace a scripted exec command at runtime.
    pub fn set_script(&self, command: &str, outcome: ScriptedExec) {
        lock(&self.shared.scripts).insert(command.to_string(), outcome);
    }

    /// Every exec command received, in order.
    ///
    /// A command handed to a process-group wrapper (`sh -c '…' swapcfg
    /// 'CMD'`, as swapcfg runs restarts) is logged as `CMD`; see
    /// [`TestServer::raw_exec_log`] for the command lines as received.
    pub fn exec_log(&self) -> Vec<String> {
        lock(&self.shared.exec_log)
            .iter()
            .map(|c| wrapped_command(c).unwrap_or_else(|| c.clone()))
            .collect()
    }

    /// Exec command lines exactly as received.
    pub fn raw_exec_log(&self) -> Vec<String> {
        lock(&self.shared.exec_log).clone()
    }

    /// How many times `op` was requested.
    pub fn op_count(&self, op: Op) -> usize {
        lock(&self.shared.counts).get(&op).copied().unwrap_or(0)
    }

    /// Stop listening and shut every connection down.
    pub async fn shutdown(self) {
        drop(self);
        tokio::task::yield_now().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, s) in lock(&self.sockets).drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The russh handler of one connection.
struct Conn {
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

/// Errors end the connection; russh needs `From<russh::Error>`.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

impl russh::server::Handler for Conn {
    type Error = ConnError;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth_decision(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth_decision(key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.shared.fault(Op::Subsystem) {
            None
            | Some(FaultAction::DropAfterStdin(_))
            | Some(FaultAction::CloseStdinAfter(_))
            | Some(FaultAction::Slow(_))
            | Some(FaultAction::DoThenDrop) => {}
            Some(FaultAction::Drop) | Some(FaultAction::WithholdThenDrop(_)) => {
                self.ctl.drop_connection();
                return Ok(());
            }
            Some(FaultAction::Hang) => {
                self.ctl.hang().await;
                return Ok(());
            }
            Some(FaultAction::Fail) | Some(FaultAction::PermissionDenied) => {
                session.channel_failure(channel_id)?;
                return Ok(());
            }
        }
        let channel = self.channels.remove(&channel_id);
        match channel {
            Some(channel)
                if name == "sftp"
                    && self.shared.sftp
                    && self.shared.wrapper.is_none()
                    && self.shared.forced_command.is_none() =>
            {
                session.channel_success(channel_id)?;
                let handler = sftp::SftpHandler::new(self.shared.clone(), self.ctl.clone());
                russh_sftp::server::run(Drained::new(channel), handler).await;
            }
            _ => session.channel_failure(channel_id)?,
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let Some(channel) = self.channels.remove(&channel_id) else {
            lock(&self.shared.exec_log).push(command);
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let (shared, ctl) = (self.shared.clone(), self.ctl.clone());
        if command.contains(exec::GATE) {
            // A command held at the client's gate: on a host, its shell
            // starts now (rc files, a prelude) and waits in `read`; the
            // command (log, fault, script) happens when the gate's line
            // arrives.
            let early = shared
                .runs_in_shell(&command)
                .then(|| exec::spawn_shell(&shared.shell, &command));
            tokio::spawn(async move {
                let mut early = early;
                if let Some((channel, stdin)) = exec::gate(channel, &command, early.as_mut()).await
                {
                    start_exec(shared, ctl, channel, command, stdin, early);
                }
            });
        } else {
            start_exec(shared, ctl, channel, command, Vec::new(), None);
        }
        Ok(())
    }
}

/// Log an exec, take its fault and run it; `stdin` was already read from
/// the channel (the gate's line) and goes first to a shell (`early`, when
/// it was started before; a fault that stops the command drops it, which
/// kills it before it read the line).
fn start_exec(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    channel: Channel<Msg>,
    command: String,
    stdin: Vec<u8>,
    early: Option<exec::Early>,
) {
    lock(&shared.exec_log).push(command.clone());
    let fault = shared.fault(Op::Exec);
    if fault == Some(FaultAction::Drop) {
        ctl.drop_connection();
        return;
    }
    if let Some(FaultAction::WithholdThenDrop(d)) = fault {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            ctl.drop_connection();
        });
        return;
    }
    tokio::spawn(exec::run(
        shared, ctl, channel, command, fault, stdin, early,
    ));
}

impl Conn {
    fn auth_decision(&self, key: &PublicKey) -> Auth {
        let known = self
            .shared
            .authorized
            .iter()
            .any(|k| k.key_data() == key.key_data());
        if known && !self.shared.reject_auth {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_quoted_arg;

    #[test]
    fn last_quoted_arg_unquotes() {
        assert_eq!(
            last_quoted_arg("sh -c 'x' swapcfg 'restart-ok'"),
            Some("restart-ok".into())
        );
        assert_eq!(
            last_quoted_arg("sh -c 'x' swapcfg 'it'\\''s'"),
            Some("it's".into())
        );
        assert_eq!(last_quoted_arg("restart-ok"), None);
    }
}

//! `Attach` and `Exec`: relay between a gRPC bidirectional stream and the shim's framed stdio.
//!
//! Each relay uses one thread reading frames from the shim (the shim API is blocking) and one
//! thread writing stdin to it; the gRPC side is a tokio task. `ready` is sent only once the shim
//! stream is attached, so a `run` that starts the container after it loses no output.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use berth_api::v1::{ExecStart, Exit, IoIn, IoOut, Ready, io_in, io_out};
use berth_shim::{ExecRequest, Frame, Stream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status as RpcStatus, Streaming};

use crate::container::Container;
use crate::record::{Status, new_id};
use crate::task::shim_status;
use crate::{Engine, err_chain};

pub(crate) type IoStream = ReceiverStream<Result<IoOut, RpcStatus>>;

const STACK: usize = 128 * 1024;

/// A stream RPC whose first message is not the one that opens it.
fn first_message_error(rpc: &str, want: &str) -> RpcStatus {
    RpcStatus::invalid_argument(format!("the first message of {rpc} must be `{want}`"))
}

fn out(msg: io_out::Msg) -> Result<IoOut, RpcStatus> {
    Ok(IoOut { msg: Some(msg) })
}

impl Engine {
    /// `Attach`.
    pub(crate) async fn attach(
        &self,
        ns: &str,
        mut inbound: Streaming<IoIn>,
    ) -> Result<IoStream, RpcStatus> {
        let Some(io_in::Msg::Attach(a)) = inbound.message().await?.and_then(|m| m.msg) else {
            return Err(first_message_error("Attach", "attach"));
        };
        let c = self.find(ns, &a.id)?;
        // A `run` session is one operation until its container is gone (or the client is):
        // the standby refill waits for its end (`standby.rs`).
        let busy = a.start.then(|| self.busy());
        // With `start`: the container's exits and removal as they stand before the start.
        let mut signal = c.signal.subscribe();
        let before = *signal.borrow_and_update();
        let (client, tty, stdin_once) = {
            let _op = c.op.lock().await;
            let client = self.ensure_shim(&c).await?;
            let m = c.lock();
            let conf = m.rec.config();
            (client, conf.tty, conf.stdin_once)
        };
        let want_stdin = a.stdin;
        let cl = client.clone();
        let stream = tokio::task::spawn_blocking(move || cl.attach(None, want_stdin))
            .await
            .map_err(|e| RpcStatus::internal(e.to_string()))?
            .map_err(|e| shim_status(&format!("cannot attach to container {}", c.id), &e))?;
        if let (true, Some(size)) = (tty, a.size) {
            let _ = stream.resize(clamp(size.width), clamp(size.height));
        }
        let (stdout, stderr) = if a.stdout || a.stderr {
            (a.stdout, a.stderr)
        } else {
            (true, true)
        };
        let name = c.name();
        self.emit(&c.ns, "container", "attach", &c.id, &[("name", &name)]);
        let finish: Option<Finish> = if a.start {
            // Attached first, so none of the output can be missed; a failed start fails the
            // call (the stream to the shim is dropped with it).
            self.start(&c).await?;
            let auto_remove = c.lock().rec.config().auto_remove;
            let c = c.clone();
            Some(Box::pin(async move {
                let _busy = busy;
                let _ = signal
                    .wait_for(|s| s.removed || (!auto_remove && s.exits > before.exits))
                    .await;
                let m = c.lock();
                (m.rec.exit_code, m.rec.error.clone())
            }))
        } else {
            None
        };
        relay(
            stream,
            inbound,
            stdout,
            stderr,
            stdin_once,
            Some(IoOut {
                msg: Some(io_out::Msg::Ready(Ready::default())),
            }),
            finish,
        )
    }

    /// `Exec`.
    pub(crate) async fn exec(
        &self,
        ns: &str,
        mut inbound: Streaming<IoIn>,
    ) -> Result<IoStream, RpcStatus> {
        let Some(io_in::Msg::Exec(x)) = inbound.message().await?.and_then(|m| m.msg) else {
            return Err(first_message_error("Exec", "exec"));
        };
        if x.cmd.is_empty() {
            return Err(RpcStatus::invalid_argument("exec needs a command"));
        }
        let c = self.find(ns, &x.id)?;
        let (client, name) = {
            let m = c.lock();
            match (m.rec.status, &m.shim) {
                (Status::Running, Some(s)) => (s.clone(), m.rec.name.clone()),
                (Status::Paused, _) => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is paused, unpause the container before exec",
                        c.id
                    )));
                }
                _ => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is not running",
                        c.id
                    )));
                }
            }
        };
        let process = self.exec_process(&c, &x)?;
        let exec_id = new_id();
        let req = ExecRequest {
            id: exec_id.clone(),
            process,
            stdin: x.stdin,
            detach: x.detach,
            size: x
                .size
                .filter(|_| x.tty)
                .map(|s| (clamp(s.width), clamp(s.height))),
        };
        let cmdline = x.cmd.join(" ");
        self.emit(
            &c.ns,
            "container",
            "exec_create",
            &c.id,
            &[("name", &name), ("execID", &exec_id), ("execCmd", &cmdline)],
        );
        let cl = client.clone();
        let res = tokio::task::spawn_blocking(move || cl.exec(&req))
            .await
            .map_err(|e| RpcStatus::internal(e.to_string()))?;
        let handle = match res {
            Ok(h) => h,
            Err(e) => {
                let Some(code) = e.exit_code_hint() else {
                    return Err(shim_status(&format!("cannot exec in container {name}"), &e));
                };
                // The process could not be started: one `exit` with the reason.
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(out(io_out::Msg::Exit(Exit {
                    code,
                    error: err_chain(&e),
                })));
                return Ok(ReceiverStream::new(rx));
            }
        };
        self.emit(
            &c.ns,
            "container",
            "exec_start",
            &c.id,
            &[("name", &name), ("execID", &exec_id), ("execCmd", &cmdline)],
        );
        let ready = IoOut {
            msg: Some(io_out::Msg::Ready(Ready {
                exec_id: exec_id.clone(),
            })),
        };
        let Some(stream) = handle.stream else {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Ok(ready));
            return Ok(ReceiverStream::new(rx));
        };
        let e = self.clone();
        let s = relay(stream, inbound, true, true, false, Some(ready), None)?;
        // exec_die when the process ends: observed by waiting on the shim.
        let c2: Arc<Container> = c.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(exit) = client.wait_exec(&exec_id) {
                let code = exit.code.to_string();
                e.emit(
                    &c2.ns,
                    "container",
                    "exec_die",
                    &c2.id,
                    &[("name", &name), ("execID", &exec_id), ("exitCode", &code)],
                );
            }
        });
        Ok(s)
    }

    /// The OCI process of an exec: the container's process (user, capabilities, rlimits,
    /// no-new-privileges) with the exec's command, env, cwd, user and terminal.
    fn exec_process(
        &self,
        c: &Container,
        x: &ExecStart,
    ) -> Result<oci_spec::runtime::Process, RpcStatus> {
        let bundle = self.bundle_dir(&c.id);
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).map_err(|e| {
                RpcStatus::internal(format!("cannot read the config of container {}: {e}", c.id))
            })?)
            .map_err(|e| {
                RpcStatus::internal(format!(
                    "cannot parse the config of container {}: {e}",
                    c.id
                ))
            })?;
        let mut p = spec.process().clone().unwrap_or_default();
        p.set_args(Some(x.cmd.clone()));
        p.set_terminal(Some(x.tty));
        p.set_console_size(None);
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &x.env {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        if x.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        p.set_env(Some(env));
        if !x.working_dir.is_empty() {
            p.set_cwd(x.working_dir.clone().into());
        }
        if !x.user.is_empty() {
            let (uid, gid) = crate::observe::resolve_user(&bundle.join("rootfs"), &x.user)
                .map_err(RpcStatus::failed_precondition)?;
            let mut u = p.user().clone();
            u.set_uid(uid);
            u.set_gid(gid);
            u.set_additional_gids(None);
            p.set_user(u);
        }
        if x.privileged {
            // Everything the container's bounding set allows.
            if let Some(mut caps) = p.capabilities().clone() {
                if let Some(b) = caps.bounding().clone() {
                    caps.set_effective(Some(b.clone()));
                    caps.set_permitted(Some(b));
                }
                p.set_capabilities(Some(caps));
            }
        }
        Ok(p)
    }

    /// `Resize`.
    pub(crate) async fn resize(
        &self,
        c: &Arc<Container>,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), RpcStatus> {
        let client = c.lock().shim.clone().ok_or_else(|| {
            RpcStatus::failed_precondition(format!("container {} is not running", c.id))
        })?;
        let exec = (!exec_id.is_empty()).then(|| exec_id.to_owned());
        let res = tokio::task::spawn_blocking(move || {
            client.resize(exec.as_deref(), clamp(width), clamp(height))
        })
        .await
        .map_err(|e| RpcStatus::internal(e.to_string()))?;
        res.map_err(|e| shim_status(&format!("cannot resize the terminal of {}", c.id), &e))
    }
}

fn clamp(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// Start the two relay threads and the inbound task; returns the outbound stream.
/// What an attach with `start` waits for before its last message: the daemon's record of the
/// exit (or the removal), as `(exit code, error)`.
type Finish = std::pin::Pin<Box<dyn std::future::Future<Output = (i32, String)> + Send>>;

fn relay(
    stream: Stream,
    mut inbound: Streaming<IoIn>,
    stdout: bool,
    stderr: bool,
    close_stdin_at_end: bool,
    ready: Option<IoOut>,
    finish: Option<Finish>,
) -> Result<IoStream, RpcStatus> {
    let (tx, rx) = mpsc::channel::<Result<IoOut, RpcStatus>>(64);
    let handle = tokio::runtime::Handle::current();
    if let Some(r) = ready {
        let _ = tx.try_send(Ok(r));
    }
    let (rd, wr) = stream
        .into_split()
        .map_err(|e| RpcStatus::internal(format!("cannot relay stdio: {}", err_chain(&e))))?;
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(STACK)
            .spawn(f)
            .map(|_| ())
            .map_err(|e| RpcStatus::internal(format!("cannot start a relay thread: {e}")))
    };
    // Shim -> client.
    spawn(
        "berth-io-out",
        Box::new(move || {
            loop {
                let msg = match rd.recv() {
                    Ok(Some(Frame::Stdout(b))) if stdout => io_out::Msg::Stdout(b),
                    Ok(Some(Frame::Stderr(b))) if stderr => io_out::Msg::Stderr(b),
                    Ok(Some(Frame::Stdout(_) | Frame::Stderr(_))) => continue,
                    Ok(Some(Frame::Exit(e))) => {
                        let (code, error) = match finish {
                            Some(f) => handle.block_on(f),
                            None => (e.code, String::new()),
                        };
                        let _ = tx.blocking_send(out(io_out::Msg::Exit(Exit { code, error })));
                        break;
                    }
                    Ok(None) => {
                        // The shim went without a word: the daemon's record still tells.
                        if let Some(f) = finish {
                            let (code, error) = handle.block_on(f);
                            let _ = tx.blocking_send(out(io_out::Msg::Exit(Exit { code, error })));
                        }
                        break;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(RpcStatus::unavailable(format!(
                            "the container's stdio stream broke: {}",
                            err_chain(&e)
                        ))));
                        break;
                    }
                };
                if tx.blocking_send(out(msg)).is_err() {
                    break;
                }
            }
        }),
    )?;
    // Client -> shim, through a thread (the shim's writes block).
    let (wtx, wrx) = std_mpsc::channel::<io_in::Msg>();
    spawn(
        "berth-io-in",
        Box::new(move || {
            let mut closed = false;
            for msg in wrx {
                let r = match msg {
                    io_in::Msg::Stdin(b) => wr.send_stdin(&b),
                    io_in::Msg::CloseStdin(true) => {
                        closed = true;
                        wr.close_stdin()
                    }
                    io_in::Msg::Resize(s) => wr.resize(clamp(s.width), clamp(s.height)),
                    _ => Ok(()),
                };
                if r.is_err() {
                    break;
                }
            }
            if close_stdin_at_end && !closed {
                let _ = wr.close_stdin();
            }
        }),
    )?;
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(msg) = m.msg {
                if wtx.send(msg).is_err() {
                    break;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

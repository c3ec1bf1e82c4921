//! A TCP proxy on loopback that cuts or stalls real connections on demand.
//!
//! Put it between the code under test and a real service (PostgreSQL, Redis,
//! NATS, RabbitMQ): the code connects to [`FaultProxy::addr`], every
//! connection is forwarded to the upstream address, and the test decides when
//! the network fails.
//!
//! | control | what the connections see |
//! |---|---|
//! | [`cut`](FaultProxy::cut) | every open connection is reset (RST) on both sides at once |
//! | [`stall`](FaultProxy::stall) | bytes in that direction stop moving (held, not dropped); the sockets stay open |
//! | [`refuse`](FaultProxy::refuse) | new connections are reset as soon as they are accepted |
//! | [`resume`](FaultProxy::resume) | stalls and refusal end; held bytes move on |
//! | [`on`](FaultProxy::on) | a one-shot [`Action`] on the connection whose bytes in a direction contain a pattern |
//!
//! A trigger is how a test puts a fault at a precise moment of a protocol:
//! "reset the relay's connection when it sends `COMMIT`", "drop the
//! JetStream ack and reset", "forward the store write, then reset before its
//! reply". Patterns are matched across read boundaries. With [`Action::Cut`]
//! the read that completes the match is not forwarded (bytes of the pattern
//! that came in an earlier read already were).
//!
//! ```no_run
//! # async fn example() {
//! use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
//!
//! let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await.unwrap();
//! // Connect the code under test to `proxy.addr()`, then:
//! let commit = proxy.on(Direction::ToClient, b"COMMIT\0", Action::Cut);
//! // ... the server committed, and its answer never arrives ...
//! commit.fired().await;
//! # }
//! ```
//!
//! Dropping the proxy stops accepting and cuts every connection it still holds.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the code under test to the service.
    ToUpstream,
    /// From the service back to the code under test.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::ToUpstream => 0,
            Self::ToClient => 1,
        }
    }

    fn reverse(self) -> Self {
        match self {
            Self::ToUpstream => Self::ToClient,
            Self::ToClient => Self::ToUpstream,
        }
    }
}

/// What a trigger does to the connection whose bytes matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Resets the connection instead of forwarding the read that completed the match: a
    /// request never arrives (matched towards upstream), or an answer is lost (matched
    /// towards the client).
    Cut,
    /// Forwards the matching bytes, then resets the connection as soon as the other side
    /// sends anything, which is dropped: the request arrives and its answer never does.
    CutAtReply,
    /// Holds the matching bytes, and stops the connection in both directions, until
    /// [`FaultProxy::resume`].
    Stall,
}

/// A proxy on `127.0.0.1:0` forwarding to one upstream address. See the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Bumped whenever a stall ends, so held bytes look again.
    changed: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    refusing: bool,
    /// Proxy-wide stalls, per [`Direction::index`].
    stalled: [bool; 2],
    next_id: u64,
    accepted: usize,
    connections: HashMap<u64, Arc<Connection>>,
    triggers: Vec<Trigger>,
}

/// One proxied connection's controls.
#[derive(Debug)]
struct Connection {
    cut: watch::Sender<bool>,
    /// Set by [`Action::Stall`]: both directions hold their bytes.
    stalled: AtomicBool,
    /// Set by [`Action::CutAtReply`], per [`Direction::index`]: the next read that way cuts.
    cut_on_read: [AtomicBool; 2],
}

impl Connection {
    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

#[derive(Debug)]
struct Trigger {
    direction: Direction,
    pattern: Vec<u8>,
    action: Action,
    fired: watch::Sender<bool>,
}

/// A trigger set with [`FaultProxy::on`]: whether (and when) it fired.
#[derive(Debug, Clone)]
pub struct Fault {
    fired: watch::Receiver<bool>,
}

impl Fault {
    /// True once the trigger has acted.
    pub fn has_fired(&self) -> bool {
        *self.fired.borrow()
    }

    /// Resolves once the trigger has acted (wrap it in a timeout).
    pub async fn fired(&self) {
        let mut fired = self.fired.clone();
        // The sender lives in the proxy; if the proxy is gone first, this never resolves.
        if fired.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::default(),
            changed: watch::Sender::new(()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, accept })
    }

    /// Where the code under test connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Resets every open connection on both sides. New connections are forwarded as usual.
    pub fn cut(&self) {
        for connection in lock(&self.shared.state).connections.values() {
            connection.cut();
        }
    }

    /// Stops moving bytes in `direction` on every connection, present and future, until
    /// [`resume`](FaultProxy::resume). Nothing is dropped and no socket is closed.
    pub fn stall(&self, direction: Direction) {
        lock(&self.shared.state).stalled[direction.index()] = true;
    }

    /// Resets every new connection as soon as it is accepted, until
    /// [`resume`](FaultProxy::resume). Open connections are left alone.
    pub fn refuse(&self) {
        lock(&self.shared.state).refusing = true;
    }

    /// Ends every stall (proxy-wide and [`Action::Stall`]) and refusal; held bytes move on.
    /// Triggers that have not fired stay set.
    pub fn resume(&self) {
        let mut state = lock(&self.shared.state);
        state.refusing = false;
        state.stalled = [false; 2];
        for connection in state.connections.values() {
            connection.stalled.store(false, Ordering::SeqCst);
        }
        drop(state);
        self.shared.changed.send_replace(());
    }

    /// Sets a one-shot trigger: the first time bytes travelling in `direction` on any
    /// connection contain `pattern`, `action` happens to that connection. Triggers are
    /// checked in the order they were set; one read fires at most one.
    pub fn on(&self, direction: Direction, pattern: &[u8], action: Action) -> Fault {
        assert!(!pattern.is_empty(), "a trigger needs a pattern");
        let (fired, receiver) = watch::channel(false);
        lock(&self.shared.state).triggers.push(Trigger {
            direction,
            pattern: pattern.to_vec(),
            action,
            fired,
        });
        Fault { fired: receiver }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.state).connections.len()
    }

    /// Connections accepted since the start, refused ones included.
    pub fn accepted(&self) -> usize {
        lock(&self.shared.state).accepted
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let registered = {
            let mut state = lock(&shared.state);
            state.accepted += 1;
            if state.refusing {
                None
            } else {
                state.next_id += 1;
                let connection = Arc::new(Connection {
                    cut: watch::Sender::new(false),
                    stalled: AtomicBool::new(false),
                    cut_on_read: [AtomicBool::new(false), AtomicBool::new(false)],
                });
                let id = state.next_id;
                state.connections.insert(id, connection.clone());
                Some((id, connection))
            }
        };
        match registered {
            Some((id, connection)) => {
                tokio::spawn(forward(client, shared.clone(), id, connection));
            }
            None => reset(client),
        }
    }
}

/// Closes `stream` with a reset rather than an orderly shutdown.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Forwards one connection until both sides have closed or it is cut.
async fn forward(mut client: TcpStream, shared: Arc<Shared>, id: u64, connection: Arc<Connection>) {
    let mut cut = connection.cut.subscribe();
    let upstream = tokio::select! {
        upstream = TcpStream::connect(shared.upstream) => upstream.ok(),
        _ = cut.wait_for(|cut| *cut) => None,
    };
    if let Some(mut upstream) = upstream {
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let was_cut = {
            let (client_read, client_write) = client.split();
            let (upstream_read, upstream_write) = upstream.split();
            let pumps = async {
                tokio::join!(
                    pump(Direction::ToUpstream, client_read, upstream_write, &shared, &connection),
                    pump(Direction::ToClient, upstream_read, client_write, &shared, &connection),
                )
            };
            tokio::select! {
                _ = pumps => false,
                _ = cut.wait_for(|cut| *cut) => true,
            }
        };
        if was_cut {
            reset(upstream);
            reset(client);
        }
    } else {
        reset(client);
    }
    lock(&shared.state).connections.remove(&id);
}

/// Moves bytes one way until the reading side closes, applying stalls and triggers. A cut
/// is signalled through the connection, which ends the forwarding.
async fn pump(
    direction: Direction,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    shared: &Shared,
    connection: &Connection,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    // The end of what went before, so a pattern split across reads still matches.
    let mut window: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if connection.cut_on_read[direction.index()].load(Ordering::SeqCst) {
            connection.cut();
            return std::future::pending().await;
        }
        window.extend_from_slice(chunk);
        let fired = shared.fire(direction, &window);
        if fired.is_some() {
            // What matched is spent: a later trigger looks at later bytes only.
            window.clear();
        }
        match fired {
            Some(Action::Cut) => {
                connection.cut();
                return std::future::pending().await;
            }
            Some(Action::CutAtReply) => {
                connection.cut_on_read[direction.reverse().index()].store(true, Ordering::SeqCst);
            }
            Some(Action::Stall) => connection.stalled.store(true, Ordering::SeqCst),
            None => {}
        }
        shared.wait_while_stalled(direction, connection).await;
        if to.write_all(chunk).await.is_err() {
            break;
        }
        let keep = shared.longest_pattern().saturating_sub(1);
        let drop_front = window.len().saturating_sub(keep);
        window.drain(..drop_front);
    }
    // Pass the end of the stream on, so the other side sees an orderly close (a stalled
    // network holds it like any byte).
    shared.wait_while_stalled(direction, connection).await;
    let _ = to.shutdown().await;
}

impl Shared {
    /// Fires the first unfired trigger for `direction` whose pattern is in `window`.
    fn fire(&self, direction: Direction, window: &[u8]) -> Option<Action> {
        let mut state = lock(&self.state);
        let position = state.triggers.iter().position(|trigger| {
            trigger.direction == direction
                && window
                    .windows(trigger.pattern.len())
                    .any(|candidate| candidate == trigger.pattern.as_slice())
        })?;
        let trigger = state.triggers.remove(position);
        trigger.fired.send_replace(true);
        Some(trigger.action)
    }

    fn longest_pattern(&self) -> usize {
        lock(&self.state)
            .triggers
            .iter()
            .map(|trigger| trigger.pattern.len())
            .max()
            .unwrap_or(0)
    }

    async fn wait_while_stalled(&self, direction: Direction, connection: &Connection) {
        let mut changed = self.changed.subscribe();
        loop {
            let stalled = lock(&self.state).stalled[direction.index()] || connection.stalled.load(Ordering::SeqCst);
            if !stalled {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

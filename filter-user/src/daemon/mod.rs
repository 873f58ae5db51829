//! `portcullis run`: load, attach, pin, reload atomically, serve status and
//! metrics, and leave the filter in force when the daemon goes away.
//!
//! Start-up order matters for "no gap": the policy is written and flipped in
//! first (an adopted, still-running program from the previous daemon sees it at
//! once, since the maps are shared through the pins), then each interface's
//! pinned link is updated to the new program atomically, and only then is
//! systemd told the daemon is ready.
pub mod control;
pub mod detach;
mod enforce;
mod events;
mod ifwait;
mod limits;
pub mod metrics;
pub mod owner;
mod reap;
mod reload;
mod tasks;
mod watch;
mod watchdog;

pub use metrics::check as check_metrics;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    loader::{AttachMode, Filter, IfaceMeta, LoadOptions, LoaderError, Meta, PinRoot},
    policy::{self, BasicAuth, CompiledPolicy, PolicyError},
    status::{counter_rows, DaemonInfo, LastReload, Status},
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub ifaces: Vec<String>,
    pub pin_root: PathBuf,
    pub control_socket: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub detach_on_exit: bool,
    pub log_packets: bool,
    /// Attach new links in this mode only (default: native, generic if the
    /// driver refuses).
    pub attach_mode: Option<AttachMode>,
    /// Wait up to this long for missing interfaces before failing.
    pub wait_iface: Option<Duration>,
    /// Where the bans are kept across restarts and reboots.
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the policy is not valid; nothing was changed:\n{0}")]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("no interface to attach to: pass --iface or set `interfaces` in the policy")]
    NoInterfaces,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another portcullis daemon answers on {0}")]
    AlreadyRunning(PathBuf),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error(transparent)]
    Owner(#[from] owner::OwnerError),
    #[error(transparent)]
    Bans(#[from] crate::bans::BanError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// What a reload changes; locked only by the (serialised) reload path.
struct Core {
    filter: Filter,
    meta: Meta,
    root: PinRoot,
    policy_path: PathBuf,
    /// Feeds are read from the cache under it.
    state_dir: PathBuf,
    interfaces: Vec<String>,
    attach_mode: Option<AttachMode>,
    /// While the enforced policy has scheduled zones: it, when its stored
    /// transitions need writing again, and the TAI offset they were
    /// written with (a change of it also calls for a top-up).
    topup: Option<TopUp>,
}

struct TopUp {
    policy: CompiledPolicy,
    due: jiff::Timestamp,
    tai_offset_s: i64,
}

/// Shared between the reload loop, the control socket and the metrics server.
pub struct Shared {
    core: Mutex<Core>,
    root: PinRoot,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    /// Prefix counts and auth of the enforced policy, for metrics.
    current: RwLock<Current>,
    detach_requested: AtomicBool,
    metrics: metrics::Metrics,
    /// The filtered interfaces (fixed for the daemon's life).
    interfaces: Vec<String>,
    /// From the periodic check ([`enforce`]).
    enforcing: RwLock<enforce::Enforcing>,
    last_reload: RwLock<Option<LastReload>>,
    /// Held for the daemon's whole life: one owner per pin root.
    _owner: owner::OwnerLock,
    /// Sampled events: the ring reader and the subscribers.
    events: events::Hub,
    /// `portcullis ban`: outside the policy, never touched by a reload.
    pub(crate) bans: Mutex<crate::bans::Bans>,
    /// List feeds: their state, and the enforced policy's feed list (the
    /// fetch task follows it).
    pub(crate) feeds: Arc<crate::feeds::Board>,
    feed_specs: tokio::sync::watch::Sender<Vec<policy::FeedSpec>>,
    /// The CrowdSec bouncer's state (`None`: no `[crowdsec]` in the policy).
    pub(crate) crowdsec: RwLock<Option<crate::crowdsec::CrowdsecStatus>>,
}

impl crate::crowdsec::BanSink for Shared {
    fn sync(
        &self,
        adds: &[crate::bans::Ban],
        removes: &[ipnet::IpNet],
        reconcile: bool,
    ) -> Result<crate::bans::SyncTally, crate::bans::BanError> {
        let mut bans = self.bans.lock().map_err(|_| {
            crate::bans::BanError::Map("bans", "the ban state lock is poisoned".into())
        })?;
        bans.sync(adds, removes, crate::crowdsec::decision::owned, reconcile)
    }
}

impl Shared {
    /// What `ping` answers.
    pub(crate) fn info(&self) -> DaemonInfo {
        let enforcing = self.enforcing.read().map(|e| e.clone()).ok();
        DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pin_root: self.root.path().display().to_string(),
            enforcing: enforcing.as_ref().is_some_and(enforce::Enforcing::ok),
            not_enforcing: enforcing.and_then(|e| e.why),
            last_reload: self.last_reload.read().ok().and_then(|l| l.clone()),
            // try_lock: a ping must not wait for a bulk ban request.
            bans: self.bans.try_lock().ok().map(|b| {
                let stats = b.stats();
                crate::status::BanSummary {
                    in_force: stats.tags.iter().map(|t| t.1).sum(),
                    tags: stats
                        .tags
                        .into_iter()
                        .map(|(tag, bans, dropped, _)| crate::status::BanTag { tag, bans, dropped })
                        .collect(),
                }
            }),
            crowdsec: self.crowdsec.read().ok().and_then(|c| c.clone()),
            feeds: self.feeds.states(),
        }
    }

    /// The enforced policy changed (start, reload): the feed board and the
    /// fetch task follow its feed list.
    fn follow_feeds(&self, current: &Current) {
        self.feeds.sync(&current.feeds);
        let specs: Vec<policy::FeedSpec> = current.feeds.iter().map(|f| f.spec.clone()).collect();
        self.feed_specs.send_if_modified(|s| {
            let changed = *s != specs;
            *s = specs;
            changed
        });
    }

    /// Per interface: is its filter in place (for the metrics gauge)?
    pub(crate) fn enforcing_by_iface(&self) -> Vec<(String, bool)> {
        self.enforcing
            .read()
            .map(|e| e.interfaces.clone())
            .unwrap_or_default()
    }

    fn record_reload(&self, why: &str, outcome: &Result<u32, String>) {
        if let Ok(mut l) = self.last_reload.write() {
            *l = Some(LastReload {
                ok: outcome.is_ok(),
                at: now(),
                why: why.to_string(),
                generation: outcome.as_ref().ok().copied(),
                error: outcome.as_ref().err().cloned(),
            });
        }
    }

    /// Runs the periodic check; logs a change of state once.
    fn check_enforcing(&self) {
        let now = enforce::check(&self.root, &self.interfaces);
        let Ok(mut cur) = self.enforcing.write() else {
            return;
        };
        match enforce::transition(&cur, &now) {
            Some((false, line)) => tracing::error!("{line}"),
            Some((true, line)) => tracing::info!("{line}"),
            None => {}
        }
        *cur = now;
    }
}

#[derive(Default, Clone)]
struct Current {
    blocklist: (usize, usize),
    allow: (usize, usize),
    failsafe: (usize, usize),
    basic_auth: Option<BasicAuth>,
    list_files: Vec<PathBuf>,
    crowdsec: Option<policy::crowdsec::CrowdsecConfig>,
    feeds: Vec<policy::FeedInfo>,
}

impl Current {
    fn of(p: &CompiledPolicy) -> Current {
        let sum = |it: &mut dyn Iterator<Item = (usize, usize)>| {
            it.fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
        };
        Current {
            blocklist: (p.blocklist_v4.len(), p.blocklist_v6.len()),
            allow: sum(&mut p.zones.iter().map(|z| (z.allow_v4.len(), z.allow_v6.len()))),
            failsafe: sum(&mut p
                .failsafe
                .iter()
                .map(|f| (f.from_v4.len(), f.from_v6.len()))),
            basic_auth: p.metrics.basic_auth.clone(),
            list_files: p.list_files.iter().map(|l| l.path.clone()).collect(),
            crowdsec: p.crowdsec.clone(),
            feeds: p.feeds.clone(),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Core {
    /// Writes `policy` into the inactive slot, records it in META and flips,
    /// all-or-nothing (see [`Filter::apply_with_meta`]). Unless `force`, a
    /// policy identical to the enforced one changes nothing and keeps the
    /// generation — judged from what the kernel holds (ACTIVE and the META
    /// record describing it), never from what this daemon last believed.
    fn apply(
        &mut self,
        mut policy: CompiledPolicy,
        force: bool,
    ) -> Result<(u32, Current), LoaderError> {
        let enforced = self.filter.meta()?;
        let active = self.filter.kernel_generation()?;
        let hash = policy.source_hash_hex();
        if !force && enforced.describes(active) && enforced.policy_hash == hash {
            tracing::info!("policy unchanged; generation {active} stays");
            self.meta = enforced;
            return Ok((active, Current::of(&policy)));
        }
        // Start from the kernel's record: zone ids and interfaces must match
        // the counters already in the maps.
        let mut meta = enforced;
        meta.assign_zone_ids(&mut policy);
        meta.policy_hash = hash;
        meta.policy_path = self.policy_path.display().to_string();
        meta.applied_at = now();
        let opts = crate::loader::ImageOptions::default();
        let generation = self.filter.apply_with_options(&policy, &meta, opts)?;
        meta.generation = generation;
        self.meta = meta;
        let current = Current::of(&policy);
        self.topup = crate::policy::schedule::topup_due(&policy, &opts.clock).map(|due| {
            tracing::info!(
                "scheduled or quota zones: transitions and periods written from {}; next \
                 top-up at {due}",
                opts.clock.now
            );
            TopUp {
                policy: policy.clone(),
                due,
                tai_offset_s: crate::policy::schedule::tai_offset_s(),
            }
        });
        if !policy.interfaces.is_empty() && policy.interfaces != self.interfaces {
            tracing::warn!(
                "the policy now names interfaces {:?}; the daemon keeps {:?} until restarted",
                policy.interfaces,
                self.interfaces
            );
        }
        Ok((generation, current))
    }

    /// Is a schedule top-up due (time, or the TAI offset changed)?
    fn topup_due(&self) -> bool {
        self.topup.as_ref().is_some_and(|t| {
            jiff::Timestamp::now() >= t.due
                || crate::policy::schedule::tai_offset_s() != t.tai_offset_s
        })
    }

    fn attach_all(&mut self) -> Result<(), LoaderError> {
        for iface in self.interfaces.clone() {
            let slot = self
                .meta
                .iface_slot(&iface)
                .ok_or(LoaderError::TooManyInterfaces)?;
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .map_err(|_| LoaderError::NoSuchInterface(iface.clone()))?;
            let before = self
                .meta
                .interfaces
                .iter()
                .find(|m| m.name == iface)
                .map(|m| m.mode);
            let mode = match self
                .filter
                .attach(&self.root, &iface, slot, self.attach_mode)?
            {
                Some(mode) => {
                    tracing::info!("{iface}: attached ({} XDP)", mode.as_str());
                    mode
                }
                None => {
                    tracing::info!("{iface}: adopted the pinned link; program replaced atomically");
                    let mode = before.unwrap_or(AttachMode::Native);
                    if let Some(want) = self.attach_mode.filter(|w| *w != mode) {
                        tracing::warn!(
                            "{iface}: the adopted link stays in {} mode (--mode {} applies to \
                             new links: `portcullis detach --iface {iface}` first)",
                            mode.as_str(),
                            want.as_str()
                        );
                    }
                    mode
                }
            };
            self.meta.interfaces.retain(|m| m.name != iface);
            self.meta.interfaces.push(IfaceMeta {
                name: iface.clone(),
                ifindex,
                slot,
                mode,
            });
        }
        // Links a previous run pinned for interfaces no longer listed.
        for stale in self.root.pinned_links() {
            if !self.interfaces.contains(&stale) {
                self.root.unpin_link(&stale)?;
                self.meta.interfaces.retain(|m| m.name != stale);
                tracing::warn!("{stale}: no longer listed; its filter was removed");
            }
        }
        self.meta.interfaces.sort_by_key(|m| m.slot);
        self.filter.set_meta(&self.meta)
    }
}

/// Runs the daemon until SIGTERM/SIGINT (or `portcullis detach`).
pub fn run(opts: RunOptions) -> Result<(), DaemonError> {
    // A parent may hand us blocked signals; SIGTERM and SIGHUP must arrive.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    match limits::raise_nofile() {
        Ok((from, to)) if from < to => tracing::info!("fd limit raised from {from} to {to}"),
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    limits::return_large_allocations();
    let policy = policy::load_in(&opts.policy, &opts.state_dir)?;
    policy.log_warnings();
    policy.log_feeds();
    let interfaces = if opts.ifaces.is_empty() {
        policy.interfaces.clone()
    } else {
        opts.ifaces.clone()
    };
    if interfaces.is_empty() {
        return Err(DaemonError::NoInterfaces);
    }
    if let Some(limit) = opts.wait_iface {
        if let Some(absent) = ifwait::wait(&interfaces, limit).into_iter().next() {
            return Err(LoaderError::NoSuchInterface(format!(
                "{absent} (waited {}s, --wait-iface)",
                limit.as_secs()
            ))
            .into());
        }
    }
    // One owner per pin root, claimed before anything is touched.
    let owner = owner::acquire(&opts.pin_root)?;
    // Claim the sockets before touching the filter: a second daemon or a busy
    // port must fail without changing what is enforced.
    let control_listener = control::bind(&opts.control_socket)?;
    let root = PinRoot::new(&opts.pin_root);
    let undo = Rollback {
        fresh: !root.has_maps() && root.pinned_links().is_empty(),
        links_before: root.pinned_links(),
        root: root.clone(),
        socket: opts.control_socket.clone(),
    };
    let started = start(&opts, policy, interfaces.clone(), &root);
    let (core, generation, current, metrics, bans) = match started {
        Ok(s) => s,
        Err(e) => {
            undo.run();
            return Err(e);
        }
    };
    let private = owner::pins_are_private(&opts.pin_root);
    if private {
        tracing::warn!(
            "the pins under {} are in a private mount namespace (e.g. `ip netns exec` \
             remounts /sys): the filter is removed when this process exits; pass a \
             --pin-root on a bpffs the host sees to keep it",
            opts.pin_root.display()
        );
    }
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        root,
        reloads_ok: AtomicU64::new(0),
        reloads_error: AtomicU64::new(0),
        current: RwLock::new(current),
        detach_requested: AtomicBool::new(false),
        metrics,
        enforcing: RwLock::new(enforce::Enforcing::started(&interfaces)),
        interfaces,
        last_reload: RwLock::new(None),
        _owner: owner,
        events: events::Hub::new(),
        bans: Mutex::new(bans),
        crowdsec: RwLock::new(None),
        feeds: Arc::new(crate::feeds::Board::default()),
        feed_specs: tokio::sync::watch::Sender::new(Vec::new()),
    });
    shared.follow_feeds(&shared.current.read().map(|c| c.clone()).unwrap_or_default());
    shared.record_reload("start", &Ok(generation));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("starting the runtime"))?;
    let served = runtime.block_on(serve(shared.clone(), opts.clone(), control_listener));
    // Don't wait on a reload still running in the blocking pool.
    runtime.shutdown_timeout(Duration::from_secs(2));
    served?;

    control::unbind(&opts.control_socket);
    let enforcing = enforce::check(&shared.root, &shared.interfaces);
    if opts.detach_on_exit || shared.detach_requested.load(Ordering::SeqCst) {
        shared.root.remove_all()?;
        tracing::info!("exiting; filter detached and pins removed");
    } else if let Some(why) = enforcing.why {
        tracing::error!("exiting; nothing stays in force: {why}");
    } else if private || owner::pins_are_private(&opts.pin_root) {
        tracing::warn!(
            "exiting; the filter is removed when this process exits: the pins are in a \
             private mount namespace ({})",
            opts.pin_root.display()
        );
    } else {
        tracing::info!(
            "exiting; the filter stays in force (pinned under {})",
            opts.pin_root.display()
        );
    }
    Ok(())
}

/// What a failed start undoes: the socket it bound, and the pins it created —
/// all of them on a fresh pin root, else only the links it added (a previous
/// run's filter, adopted, stays as it was).
struct Rollback {
    fresh: bool,
    links_before: Vec<String>,
    root: PinRoot,
    socket: PathBuf,
}

impl Rollback {
    fn run(self) {
        control::unbind(&self.socket);
        if self.fresh {
            match self.root.remove_all() {
                Ok(()) => tracing::info!(
                    "start failed: the pins it created under {} were removed",
                    self.root.path().display()
                ),
                Err(e) => tracing::error!("start failed, and removing its pins failed: {e}"),
            }
            return;
        }
        for iface in self.root.pinned_links() {
            if !self.links_before.contains(&iface) {
                if let Err(e) = self.root.unpin_link(&iface) {
                    tracing::error!("start failed, and removing its link on {iface} failed: {e}");
                }
            }
        }
    }
}

/// Loads, applies and attaches; what a failed start rolls back.
fn start(
    opts: &RunOptions,
    policy: CompiledPolicy,
    interfaces: Vec<String>,
    root: &PinRoot,
) -> Result<(Core, u32, Current, metrics::Metrics, crate::bans::Bans), DaemonError> {
    let metrics = metrics::Metrics::new(opts.metrics_listen, &policy.metrics)?;
    let mut filter = Filter::load(LoadOptions {
        pin_root: Some(root.clone()),
        ..LoadOptions::default()
    })?;
    // Before the policy: a corrupt ban state stops the start with nothing
    // written (the pinned bans keep enforcing).
    let ban_maps = crate::bans::kernel::BanMaps::take(&mut filter)?;
    let bans = crate::bans::Bans::start(&opts.state_dir, ban_maps)?;
    let adopted = filter.generation() != 0;
    let meta = filter.meta()?;
    let mut core = Core {
        filter,
        meta,
        root: root.clone(),
        policy_path: opts.policy.clone(),
        state_dir: opts.state_dir.clone(),
        interfaces,
        attach_mode: opts.attach_mode,
        topup: None,
    };
    // Always write at start-up: the slots may come from another build.
    let events_policy = policy.events;
    let applied = core.apply(policy, true).and_then(|a| {
        core.attach_all()?;
        Ok(a)
    });
    let (generation, current) = match applied {
        Ok(a) => a,
        Err(e) => {
            core.filter.settle_failed_migration(root);
            return Err(e.into());
        }
    };
    if let Some(from) = core.filter.migrating_from() {
        // Test hook: die like kill -9 between the link updates and retiring
        // the old maps (the e2e suite's interrupted-upgrade scenario).
        if std::env::var_os("PORTCULLIS_TEST_ABORT_MIGRATION").is_some() {
            tracing::error!("PORTCULLIS_TEST_ABORT_MIGRATION: exiting mid-migration");
            std::process::exit(86);
        }
        let late = core.filter.finish_migration(root)?.unwrap_or_default();
        tracing::info!(
            "migrated the pinned filter from map layout {from} to {}: every link runs this \
             build; {} counters moved meanwhile were carried ({} packets); the old maps are \
             removed",
            filter_common::LAYOUT_VERSION,
            late.cells,
            late.packets
        );
    }
    // After a migration: `maps/` holds this build's maps only from here on.
    apply_events(root, &events_policy, "start");
    if opts.log_packets {
        log_packets_from_flag(root);
    }
    tracing::info!(
        "enforcing {} (generation {generation}{}) on {:?}",
        opts.policy.display(),
        if adopted {
            ", adopted the running filter"
        } else {
            ""
        },
        core.interfaces
    );
    Ok((core, generation, current, metrics, bans))
}

/// A request for the reload loop; `reply` gets the generation or the errors.
pub(crate) struct Reload {
    why: &'static str,
    reply: Option<oneshot::Sender<Result<u32, String>>>,
}

async fn serve(
    shared: Arc<Shared>,
    opts: RunOptions,
    control_listener: std::os::unix::net::UnixListener,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};

    let (reload_tx, mut reload_rx) = mpsc::channel::<Reload>(16);
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
    let listener =
        tokio::net::UnixListener::from_std(control_listener).map_err(io_err("control socket"))?;
    tokio::spawn(control::serve(
        listener,
        shared.clone(),
        reload_tx.clone(),
        shutdown_tx,
    ));
    tokio::spawn(metrics::serve(shared.clone()));
    tokio::spawn(events::read_ring(shared.clone()));
    tokio::spawn(reap::run(shared.clone()));
    tokio::spawn(tasks::prune_bans(shared.clone()));
    tokio::spawn(tasks::crowdsec(shared.clone()));
    tokio::spawn(crate::feeds::task::run(crate::feeds::task::Ctx {
        state_dir: opts.state_dir.clone(),
        specs: shared.feed_specs.subscribe(),
        board: shared.feeds.clone(),
        reload: tasks::feed_reload(reload_tx.clone()),
    }));
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(64);
    let mut watcher = watch::Watcher::new(changed_tx);
    watcher.watch(&watched_paths(&opts.policy, &shared));

    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut enforce_tick = tokio::time::interval(enforce::CHECK_EVERY);
    // Scheduled zones: is a top-up of their transitions due?
    let mut schedule_tick = tokio::time::interval(Duration::from_secs(30));
    // WATCHDOG=1 from this loop: a loop stuck anywhere stops the pings.
    let watchdog_every = watchdog::interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    // A file change reloads 300 ms after the first event of a burst (editors
    // write in several steps); the loop keeps serving meanwhile.
    let mut change_due: Option<tokio::time::Instant> = None;

    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("sd_notify: {e}");
    }
    // Copy the enforced policy into the standby slot off the critical path, so
    // the first reload is a diff too (a reload meanwhile waits for the lock).
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(mut core) = s.core.lock() {
            match core.filter.prefill_standby() {
                Ok(true) => tracing::info!("standby slot pre-filled"),
                Ok(false) => {}
                Err(e) => tracing::warn!("pre-filling the standby slot: {e}"),
            }
        }
    });
    loop {
        let debounce = async {
            match change_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let request = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = shutdown_rx.recv() => break,
            _ = hup.recv() => Reload { why: "SIGHUP", reply: None },
            Some(r) = reload_rx.recv() => r,
            Some(()) = changed_rx.recv() => {
                change_due.get_or_insert(tokio::time::Instant::now() + Duration::from_millis(300));
                continue;
            }
            _ = debounce => {
                change_due = None;
                Reload { why: "file change", reply: None }
            }
            _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                watchdog::ping();
                continue;
            }
            _ = enforce_tick.tick() => {
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.check_enforcing()).await;
                continue;
            }
            _ = schedule_tick.tick() => {
                // A reload holds the lock: it writes fresh transitions anyway.
                let due = shared.core.try_lock().is_ok_and(|c| c.topup_due());
                if !due {
                    continue;
                }
                Reload { why: reload::TOPUP, reply: None }
            }
        };
        let s = shared.clone();
        let mut task = tokio::task::spawn_blocking(move || reload::reload(&s, request.why));
        // A stop request is honoured even while a reload runs: the reload
        // writes only the inactive slot until its flip, so leaving it behind
        // cannot leave half a policy enforced. A long reload (a large policy)
        // keeps the watchdog fed: this loop still answers.
        let result = loop {
            tokio::select! {
                r = &mut task => {
                    break Some(r.unwrap_or_else(|e| Err(format!("reload task failed: {e}"))))
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                _ = shutdown_rx.recv() => break None,
                _ = watchdog_tick.tick(), if watchdog_every.is_some() => watchdog::ping(),
            }
        };
        let Some(result) = result else { break };
        // Also after a rejected reload: a symlink chain (a ConfigMap's
        // `..data`) may point somewhere new even though the policy did not load.
        watcher.watch(&watched_paths(&opts.policy, &shared));
        if let Some(reply) = request.reply {
            let _ = reply.send(result);
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}

fn watched_paths(policy: &Path, shared: &Shared) -> Vec<PathBuf> {
    let mut paths = vec![policy.to_path_buf()];
    if let Ok(c) = shared.current.read() {
        paths.extend(c.list_files.iter().cloned());
    }
    paths.extend(shared.metrics.watched());
    paths
}

pub(crate) fn root_matches(a: &str, b: &Path) -> bool {
    std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

/// Status from the pins; `daemon_running` says whether a daemon answers.
pub fn status(pin_root: &Path, control_socket: &Path) -> Result<Status, LoaderError> {
    let root = PinRoot::new(pin_root);
    let shown = pin_root.display().to_string();
    // A daemon of another pin root (same socket path) does not speak for ours.
    let (running, daemon) = match control::ping_info(control_socket) {
        None => (false, None),
        // A daemon too old to say which pin root it serves.
        Some(None) => (true, None),
        Some(Some(d)) if root_matches(&d.pin_root, pin_root) => (true, Some(d)),
        Some(Some(_)) => (false, None),
    };
    if !root.has_maps() {
        let mut s = Status::absent(daemon, &shown);
        s.daemon_running = running;
        return Ok(s);
    }
    let pins = root.open()?;
    let meta = pins.meta()?;
    let rows = counter_rows(&meta, |slot| pins.counters(slot))?;
    let generation = pins.generation()?;
    let mut s = Status::new(
        daemon,
        &shown,
        generation,
        &meta,
        rows,
        &root.pinned_links(),
    );
    s.daemon_running = running;
    s.schedules = crate::status::zone_hours(
        &meta,
        &pins.schedules(&root, generation)?,
        crate::policy::schedule::kernel_tai_now_ns(),
        crate::policy::schedule::tai_offset_s(),
    );
    if let Some(state) = crate::loader::QuotaState::open(&root)? {
        let quotas = crate::loader::active_quotas(&root, generation)?;
        s.quotas = state.report(&quotas, &meta, crate::policy::schedule::kernel_tai_now_ns())?;
    }
    Ok(s)
}

/// The policy's `[events]`, unless a setting made at run time is in force.
fn apply_events(root: &PinRoot, policy: &crate::events::EventsPolicy, when: &str) {
    let mut maps = match crate::events::EventsMaps::open(root) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("events: {e}; the policy's [events] is not applied");
            return;
        }
    };
    match maps.apply_policy(policy) {
        Ok(s) => tracing::info!("events ({when}): {s}"),
        Err(kept) => tracing::info!(
            "events ({when}): {kept}; the policy's [events] is not applied \
             (`portcullis sampling --reset` returns to it)"
        ),
    }
}

/// `run --log-packets`: packet logging on and every decision sampled, as
/// `portcullis log-packets on` does (and, like it, kept until switched off).
fn log_packets_from_flag(root: &PinRoot) {
    tracing::warn!(
        "--log-packets is deprecated: use `portcullis log-packets on|off` (at run time, no \
         restart); switching packet logging on now"
    );
    match crate::events::EventsMaps::open(root).and_then(|mut m| {
        let s = crate::events::cli::log_packets_setting(m.sampling()?, true);
        m.set(&s).map(|()| s)
    }) {
        Ok(s) => tracing::info!("events: {s}"),
        Err(e) => tracing::warn!("events: packet logging not switched on: {e}"),
    }
}

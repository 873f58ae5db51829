//! The traffic generator and the baselines of the bench object.
//!
//! `bench_gen` (IPv4) and `bench_gen6` (IPv6) run through BPF_PROG_TEST_RUN
//! with BPF_F_TEST_XDP_LIVE_FRAMES on CPU 0: each frame gets a random source
//! from one [`Sources`] set of the generator's tables, its checksums fixed
//! incrementally, and leaves the sending veth with XDP_TX. Before a set is
//! flooded, [`Gen::self_check`] runs the generator on it without live frames
//! and checks every output frame against a full rebuild (checksums included)
//! and its source against the set.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    frame::{self, L4},
    sys,
};

/// Sizes of `GEN_PREFIXES` and `GEN6_PREFIXES` in bench.rs.
const GEN_MAX_PREFIXES: usize = 1 << 20;
const GEN6_MAX_PREFIXES: usize = 1 << 17;
/// Every program of the bench object the runner uses (all loaded up front).
const PROGRAMS: [&str; 6] = [
    "bench_gen",
    "bench_gen6",
    "bench_drop",
    "bench_pass",
    "bench_floor",
    "bench_floor_pass",
];
const XDP_TX: u32 = 3;

/// One source set in the generator's tables, and the destination port of
/// its frames.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    pub v6: bool,
    first: u32,
    count: u32,
    pub dport: u16,
}

pub struct Gen {
    bench: Ebpf,
    nets4: Vec<Ipv4Net>,
    nets6: Vec<Ipv6Net>,
}

/// An evenly strided sample of at most `want` entries of `list` (every kind
/// of entry, spread over the whole list).
pub fn sample<T: Copy>(list: &[T], want: usize) -> Vec<T> {
    let want = want.min(list.len()).max(1);
    let stride = (list.len() / want).max(1);
    list.iter().step_by(stride).take(want).copied().collect()
}

fn words(a: u128) -> [u32; 4] {
    [
        (a >> 96) as u32,
        (a >> 64) as u32,
        (a >> 32) as u32,
        a as u32,
    ]
}

impl Gen {
    pub fn load(object: &Path) -> Result<Gen> {
        let mut bench =
            Ebpf::load_file(object).with_context(|| format!("loading {}", object.display()))?;
        for name in PROGRAMS {
            let p: &mut Xdp = bench.program_mut(name).context(name)?.try_into()?;
            p.load().with_context(|| format!("verifying {name}"))?;
        }
        Ok(Gen {
            bench,
            nets4: Vec::new(),
            nets6: Vec::new(),
        })
    }

    pub fn add_v4(&mut self, nets: &[Ipv4Net], dport: u16) -> Result<Sources> {
        let first = self.nets4.len();
        ensure!(
            !nets.is_empty() && first + nets.len() <= GEN_MAX_PREFIXES,
            "GEN_PREFIXES: {} + {} prefixes do not fit in {GEN_MAX_PREFIXES}",
            first,
            nets.len()
        );
        let mut table: Array<&mut MapData, [u32; 2]> =
            Array::try_from(self.bench.map_mut("GEN_PREFIXES").context("GEN_PREFIXES")?)?;
        for (i, n) in nets.iter().enumerate() {
            let e = [u32::from(n.network()), u32::from(n.hostmask())];
            table.set((first + i) as u32, e, 0)?;
        }
        self.nets4.extend_from_slice(nets);
        Ok(Sources {
            v6: false,
            first: first as u32,
            count: nets.len() as u32,
            dport,
        })
    }

    pub fn add_v6(&mut self, nets: &[Ipv6Net], dport: u16) -> Result<Sources> {
        let first = self.nets6.len();
        ensure!(
            !nets.is_empty() && first + nets.len() <= GEN6_MAX_PREFIXES,
            "GEN6_PREFIXES: {} + {} prefixes do not fit in {GEN6_MAX_PREFIXES}",
            first,
            nets.len()
        );
        let mut table: Array<&mut MapData, [u32; 8]> = Array::try_from(
            self.bench
                .map_mut("GEN6_PREFIXES")
                .context("GEN6_PREFIXES")?,
        )?;
        for (i, n) in nets.iter().enumerate() {
            let (net, mask) = (
                words(u128::from(n.network())),
                words(u128::from(n.hostmask())),
            );
            let mut e = [0u32; 8];
            e[..4].copy_from_slice(&net);
            e[4..].copy_from_slice(&mask);
            table.set((first + i) as u32, e, 0)?;
        }
        self.nets6.extend_from_slice(nets);
        Ok(Sources {
            v6: true,
            first: first as u32,
            count: nets.len() as u32,
            dport,
        })
    }

    /// The template frame of `s` (source 0, checksums without it), after
    /// writing `s` into the generator's configuration.
    fn configure(&mut self, s: &Sources) -> Result<Vec<u8>> {
        if s.v6 {
            let t = frame::gen_template6(s.dport);
            let mut cfg: Array<&mut MapData, [u32; 4]> =
                Array::try_from(self.bench.map_mut("GEN6_CONFIG").context("GEN6_CONFIG")?)?;
            cfg.set(0, [s.first, s.count, t.l4_sum, 0], 0)?;
            Ok(t.frame)
        } else {
            let t = frame::gen_template(L4::Udp, s.dport);
            let mut cfg: Array<&mut MapData, [u32; 5]> =
                Array::try_from(self.bench.map_mut("GEN_CONFIG").context("GEN_CONFIG")?)?;
            cfg.set(0, [s.first, s.count, t.ip_sum, t.l4_sum, t.l4_csum_off], 0)?;
            Ok(t.frame)
        }
    }

    fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .bench
            .program(name)
            .context(name.to_string())?
            .try_into()?)
    }

    fn gen_program(&self, s: &Sources) -> Result<&Xdp> {
        self.program(if s.v6 { "bench_gen6" } else { "bench_gen" })
    }

    /// Runs the generator `frames` times on `s` without live frames and checks
    /// each output: XDP_TX, byte-equal to a frame built from scratch with the
    /// same source (so both checksums are right), the source inside the set.
    pub fn self_check(&mut self, s: &Sources, frames: usize) -> Result<()> {
        let template = self.configure(s)?;
        let prog = self.gen_program(s)?;
        let range = s.first as usize..(s.first + s.count) as usize;
        for _ in 0..frames {
            let mut out = vec![0u8; template.len() + 64];
            let r = prog.test_run(TestRunOptions {
                data_in: Some(&template),
                data_out: Some(&mut out),
                ..Default::default()
            })?;
            ensure!(
                r.return_value == XDP_TX,
                "generator returned {} on {s:?}",
                r.return_value
            );
            out.truncate(r.data_size_out as usize);
            ensure!(
                frame::checksums_ok(&out),
                "generator frame with bad checksums: {out:02x?}"
            );
            let (rebuilt, inside) = if s.v6 {
                let mut a = [0u8; 16];
                a.copy_from_slice(&out[frame::IP6_SRC_OFF..frame::IP6_SRC_OFF + 16]);
                let src = Ipv6Addr::from(a);
                (
                    frame::ipv6_udp(src, frame::RX_ADDR6, 40000, s.dport),
                    self.nets6[range.clone()].iter().any(|n| n.contains(&src)),
                )
            } else {
                let src = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
                (
                    frame::ipv4(src, frame::RX_ADDR, L4::Udp, 40000, s.dport),
                    self.nets4[range.clone()].iter().any(|n| n.contains(&src)),
                )
            };
            ensure!(
                rebuilt == out,
                "generator frame differs from a full rebuild:\n{out:02x?}\n{rebuilt:02x?}"
            );
            ensure!(inside, "generator source outside its set ({s:?})");
        }
        Ok(())
    }

    pub fn attach(&mut self, name: &str, iface: &str) -> Result<XdpLinkId> {
        let p: &mut Xdp = self
            .bench
            .program_mut(name)
            .context(name.to_string())?
            .try_into()?;
        p.attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {iface}"))
    }

    pub fn detach(&mut self, name: &str, link: XdpLinkId) -> Result<()> {
        let p: &mut Xdp = self
            .bench
            .program_mut(name)
            .context(name.to_string())?
            .try_into()?;
        p.detach(link)?;
        Ok(())
    }

    /// Packets the floor programs counted per family (IPv4, IPv6, other),
    /// summed over CPUs.
    pub fn floor_counts(&self) -> Result<[u64; 3]> {
        let map: PerCpuArray<&MapData, [u64; 2]> =
            PerCpuArray::try_from(self.bench.map("FLOOR").context("FLOOR")?)?;
        let mut out = [0u64; 3];
        for (i, o) in out.iter_mut().enumerate() {
            *o = map.get(&(i as u32), 0)?.iter().map(|v| v[0]).sum();
        }
        Ok(out)
    }

    /// One window of flood from `s` out of `tx` (ifindex): the generator
    /// thread on CPU 0 for `warmup` + `window`; `rx()` (the receiver's
    /// processed-packet counter) is read around the window. Receiver and
    /// generator Mpps.
    pub fn window(
        &mut self,
        s: &Sources,
        tx: u32,
        rx: &dyn Fn() -> Result<u64>,
        warmup: Duration,
        window: Duration,
    ) -> Result<(f64, f64)> {
        let template = self.configure(s)?;
        let prog = self.gen_program(s)?;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(template.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&tx.to_ne_bytes());
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let deadline = warmup + window + Duration::from_secs(5);
        const CHUNK: u32 = 1 << 17;
        thread::scope(|scope| -> Result<(f64, f64)> {
            let worker = scope.spawn(|| -> Result<()> {
                sys::pin_to_cpu(0, 0)?;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < deadline {
                    let run = prog.test_run(TestRunOptions {
                        data_in: Some(&template),
                        ctx_in: Some(&ctx),
                        repeat: CHUNK,
                        attrs: TestRunAttrs::new().xdp_live_frames(gen_batch()),
                        ..Default::default()
                    });
                    match run {
                        Ok(_) => {
                            sent.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
                        }
                        // A signal ends a run early (the kernel checks for
                        // one between batches); the frames it sent are
                        // uncounted, the receiver's counter has them.
                        Err(ProgramError::SyscallError(e))
                            if e.io_error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            });
            let measured = (|| -> Result<(f64, f64)> {
                thread::sleep(warmup);
                let (r0, s0, t0) = (rx()?, sent.load(Ordering::Relaxed), Instant::now());
                thread::sleep(window);
                let (r1, s1, t1) = (rx()?, sent.load(Ordering::Relaxed), Instant::now());
                let dt = (t1 - t0).as_secs_f64();
                Ok((
                    r1.saturating_sub(r0) as f64 / dt / 1e6,
                    s1.saturating_sub(s0) as f64 / dt / 1e6,
                ))
            })();
            stop.store(true, Ordering::Relaxed);
            let joined = worker
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))?;
            let rates = measured?;
            joined?;
            Ok(rates)
        })
    }
}

/// Frames per live-frames batch (the kernel's default 64; at most 256).
fn gen_batch() -> u32 {
    std::env::var("PCB_GEN_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

//! Many hosts on a real etcd cluster.
//!
//! Twenty `atoll agent` processes (twenty nodes in three zones) share one
//! three-member etcd cluster (`/usr/bin/etcd` on 127.0.0.1), and storms of
//! ADDs go through the real `atoll-ipam` binary, 32 plugin processes at a
//! time. The faults are real too: an etcd member or the leader killed with
//! SIGKILL in the middle of a storm and started again, an agent killed in
//! the middle of its ADDs and started again, two members stopped, a node
//! rebooted.
//!
//! After each test the store is held against what the runtime was told
//! (see `etcd_common::fleet::Ledger::verify`): every address held once, each
//! in the subnet of its node's zone, one claim per container whose ADD
//! succeeded and was not deleted since, none for any other, and `atoll
//! check` clean. ADDs that fail under a fault must fail with "try again
//! later" (CNI code 11), and succeed when the runtime retries them.
//!
//! The tests run one at a time (see `etcd_common::one_at_a_time`). They
//! need `cargo build --bins` (for atoll-ipam) and `/usr/bin/etcd`; no root,
//! no network namespace: the plugin only decides addresses.

mod common;
mod etcd_common;

use std::time::{Duration, Instant};

use etcd_common::etcd::{EtcdCluster, MEMBERS};
use etcd_common::fleet::{jobs, node_name, Fleet, Job, Ledger, Outcome};
use etcd_common::one_at_a_time;

/// Nodes, one agent each.
const NODES: usize = 20;

/// ADDs of the big storm.
const STORM: usize = 2_000;

/// ADDs of a storm with a fault in it.
const FAULT_STORM: usize = 600;

/// How long a storm may take to reach a point where a test acts.
const PATIENCE: Duration = Duration::from_secs(180);

/// How long an election may take after the leader dies.
const ELECTION: Duration = Duration::from_secs(15);

/// The bound on one ADD without quorum: the agent's store gives up after
/// its request timeout (2 s by default); this leaves room for a loaded
/// machine, while a hanging call would still be caught.
const FAIL_FAST: Duration = Duration::from_secs(10);

/// Rounds of retries a runtime makes after a fault.
const RETRIES: usize = 5;

/// Where the etcd store keeps its claims (the default prefix `/atoll/`).
const CLAIMS_PREFIX: &str = "/atoll/claims/";

/// Latency figures of a storm's successful calls, for the test's output.
fn latency(outcomes: &[Outcome]) -> String {
    let mut took: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.success)
        .map(|o| o.took)
        .collect();
    if took.is_empty() {
        return "no call succeeded".into();
    }
    took.sort();
    let ms = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)].as_secs_f64() * 1e3;
    format!("ADD p50 {:.0} ms, p99 {:.0} ms", ms(50), ms(99))
}

/// Waits until member `n` holds, in its own copy of the data, as many
/// claims as the ledger: it caught up after its restart.
fn assert_caught_up(etcd: &EtcdCluster, n: usize, ledger: &Ledger) {
    let mut seen = None;
    let caught_up = common::wait_until(Duration::from_secs(30), || {
        seen = etcd.local_count(n, CLAIMS_PREFIX);
        seen == Some(ledger.len() as u64)
    });
    assert!(
        caught_up,
        "member {n} holds {seen:?} claims after its restart, the cluster {}",
        ledger.len()
    );
}

#[test]
fn a_storm_of_2000_adds_on_20_hosts_gives_each_address_once() {
    let _serial = one_at_a_time();
    let etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    let storm = jobs("storm", STORM, NODES);
    let started = Instant::now();
    let outcomes = fleet.storm("ADD", &storm, |_| {});
    let took = started.elapsed();
    // No fault was made: every ADD succeeds, none lost to a race.
    for out in &outcomes {
        ledger.added(out);
    }
    println!(
        "{STORM} ADDs on {NODES} agents in {took:.1?} ({:.0}/s), {}",
        STORM as f64 / took.as_secs_f64(),
        latency(&outcomes)
    );
    ledger.verify(&fleet);

    // A tenth are deleted, and another tenth added again, all in parallel:
    // the deleted ones are freed, the others keep their addresses.
    let gone: Vec<Job> = storm.iter().step_by(10).cloned().collect();
    for out in fleet.storm("DEL", &gone, |_| {}) {
        assert!(out.success, "DEL {}: {}", out.job.container, out.stdout);
        ledger.deleted(&out.job.container);
    }
    let again: Vec<Job> = storm.iter().skip(1).step_by(10).cloned().collect();
    for out in fleet.storm("ADD", &again, |_| {}) {
        ledger.added(&out);
    }
    assert_eq!(ledger.len(), STORM - gone.len());
    ledger.verify(&fleet);
}

/// Which member a test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Follower,
    Leader,
}

/// A storm with member `victim` killed (SIGKILL) at a third of it and
/// started again at two thirds; then the retries and the checks.
fn storm_with_a_member_killed(victim: Victim) {
    let _serial = one_at_a_time();
    let mut etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    let leader = etcd.leader(ELECTION).expect("a leader");
    let killed = match victim {
        Victim::Leader => leader,
        Victim::Follower => (leader + 1) % MEMBERS,
    };
    let storm = jobs(&format!("{victim:?}").to_lowercase(), FAULT_STORM, NODES);
    let mut killed_at = 0;
    let mut elected = None;
    let mut back_at = 0;
    let outcomes = fleet.storm("ADD", &storm, |progress| {
        let total = progress.total();
        assert!(
            progress.wait_done(total / 3, PATIENCE),
            "the storm made no progress"
        );
        etcd.kill(killed);
        killed_at = progress.done();
        elected = etcd.leader(ELECTION);
        assert!(
            progress.wait_done(2 * total / 3, PATIENCE),
            "the storm stopped after the kill at {killed_at} of {total}"
        );
        etcd.restart(killed);
        back_at = progress.done();
    });
    assert!(
        killed_at < FAULT_STORM,
        "member {killed} was killed after the storm"
    );
    let elected = elected.expect("no leader among the surviving members");
    if victim == Victim::Leader {
        assert_ne!(elected, killed, "the killed member still leads");
    }

    let failed = ledger.settle(&outcomes);
    println!(
        "{victim:?} (member {killed}) killed after {killed_at} of {FAULT_STORM} ADDs, back \
         after {back_at}; leader then: member {elected}; {} ADDs failed with try-again-later; {}",
        failed.len(),
        latency(&outcomes)
    );
    ledger.retry(&fleet, failed, RETRIES);
    assert_eq!(ledger.len(), FAULT_STORM);
    ledger.verify(&fleet);
    assert_caught_up(&etcd, killed, &ledger);
}

#[test]
fn a_follower_killed_mid_storm_and_brought_back_loses_nothing() {
    storm_with_a_member_killed(Victim::Follower);
}

#[test]
fn the_leader_killed_mid_storm_and_brought_back_loses_nothing() {
    storm_with_a_member_killed(Victim::Leader);
}

#[test]
fn an_agent_killed_mid_add_and_restarted_leaks_nothing() {
    let _serial = one_at_a_time();
    let etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    const VICTIM: usize = 7;
    let storm = jobs("crash", FAULT_STORM, NODES);
    let mut in_flight_at_kill = 0;
    let outcomes = fleet.storm("ADD", &storm, |progress| {
        let total = progress.total();
        assert!(
            progress.wait_done(total / 3, PATIENCE),
            "the storm made no progress"
        );
        // Kill it while the plugin waits on it.
        assert!(
            progress.wait_in_flight(VICTIM, PATIENCE),
            "no call to {} in flight",
            node_name(VICTIM)
        );
        in_flight_at_kill = progress.in_flight(VICTIM);
        fleet.agents[VICTIM].kill9();
        assert!(
            progress.wait_done(2 * total / 3, PATIENCE),
            "the storm stopped after the kill"
        );
        fleet.agents[VICTIM].restart();
    });

    // Only the killed agent's calls failed, each with try-again-later.
    let failed = ledger.settle(&outcomes);
    for job in &failed {
        assert_eq!(
            job.node,
            VICTIM,
            "{} failed on {}, whose agent ran",
            job.container,
            node_name(job.node)
        );
    }
    assert!(
        !failed.is_empty(),
        "no ADD failed: the agent was not killed in the storm"
    );
    println!(
        "agent of {} killed with {in_flight_at_kill} calls to it in flight; {} of {FAULT_STORM} \
         ADDs failed with try-again-later",
        node_name(VICTIM),
        failed.len()
    );

    // The runtime retries; the restarted agent answers, and an ADD whose
    // claim was written before the kill gets that claim's address.
    ledger.retry(&fleet, failed, RETRIES);
    assert_eq!(ledger.len(), FAULT_STORM);
    ledger.verify(&fleet);
}

#[test]
fn without_quorum_adds_fail_fast_and_succeed_once_after_the_members_return() {
    let _serial = one_at_a_time();
    let mut etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    let before = jobs("before", 100, NODES);
    for out in fleet.storm("ADD", &before, |_| {}) {
        ledger.added(&out);
    }
    let pids: Vec<Option<u32>> = fleet.agents.iter().map(|a| a.running_pid()).collect();

    // Stop the leader and a follower; the third member is left without a
    // leader, and knows it.
    let leader = etcd.leader(ELECTION).expect("a leader");
    let survivor = (leader + 2) % MEMBERS;
    etcd.stop(leader);
    etcd.stop((leader + 1) % MEMBERS);
    assert!(
        etcd.wait_leaderless(survivor, Duration::from_secs(30)),
        "member {survivor} still has a leader with two members stopped"
    );

    // Two ADDs per node: each fails with try-again-later, in bounded time.
    let during = jobs("during", 2 * NODES, NODES);
    let outcomes = fleet.storm("ADD", &during, |_| {});
    for out in &outcomes {
        out.assert_try_again();
        assert!(
            out.took < FAIL_FAST,
            "ADD {} without quorum took {:?}",
            out.job.container,
            out.took
        );
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    println!(
        "without quorum: {} ADDs failed with try-again-later, the slowest in {slowest:.1?}",
        during.len()
    );

    // The members return. The failed ADDs wrote nothing...
    etcd.restart(leader);
    etcd.restart((leader + 1) % MEMBERS);
    ledger.verify(&fleet);

    // ...and succeed when retried, through the same agents, once each: a
    // second ADD gives the same address, and each container holds one.
    for out in fleet.storm("ADD", &during, |_| {}) {
        ledger.added(&out);
    }
    for out in fleet.storm("ADD", &during, |_| {}) {
        ledger.added(&out);
    }
    assert_eq!(ledger.len(), before.len() + during.len());
    ledger.verify(&fleet);
    let after: Vec<Option<u32>> = fleet.agents.iter().map(|a| a.running_pid()).collect();
    assert_eq!(after, pids, "an agent exited or was restarted");
    assert!(pids.iter().all(Option::is_some));
}

#[test]
fn a_repeated_del_of_one_container_succeeds_each_time() {
    let _serial = one_at_a_time();
    let etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    let pods = jobs("del", 2 * NODES, NODES);
    for out in fleet.storm("ADD", &pods, |_| {}) {
        ledger.added(&out);
    }

    // One after another.
    let first = &pods[0];
    for round in 1..=3 {
        let out = fleet.call("DEL", first);
        assert!(
            out.success,
            "DEL #{round} of {}: {}",
            first.container, out.stdout
        );
        ledger.deleted(&first.container);
        ledger.verify(&fleet);
    }

    // Eight at once, as a runtime retrying a slow DEL may send them.
    let second = &pods[1];
    let same = vec![second.clone(); 8];
    for out in fleet.storm("DEL", &same, |_| {}) {
        assert!(out.success, "DEL of {}: {}", second.container, out.stdout);
    }
    ledger.deleted(&second.container);

    // A container the store never saw.
    let never = Job {
        container: "never-added".into(),
        node: 3,
        via_app: true,
    };
    let out = fleet.call("DEL", &never);
    assert!(out.success, "DEL of an unknown container: {}", out.stdout);
    ledger.verify(&fleet);

    // The container can come back.
    ledger.added(&fleet.call("ADD", first));
    ledger.verify(&fleet);
}

#[test]
fn gc_after_a_node_reboot_frees_exactly_the_dead_containers() {
    let _serial = one_at_a_time();
    let etcd = EtcdCluster::start();
    let fleet = Fleet::start(&etcd.store(), NODES);
    let mut ledger = Ledger::default();

    const REBOOTED: usize = 5;
    let on_node: Vec<Job> = (0..30)
        .map(|i| Job {
            container: format!("reboot-{i:02}"),
            node: REBOOTED,
            via_app: i % 2 == 0,
        })
        .collect();
    let elsewhere: Vec<Job> = jobs("other", 80, NODES)
        .into_iter()
        .filter(|j| j.node != REBOOTED)
        .collect();
    let all: Vec<Job> = on_node.iter().chain(&elsewhere).cloned().collect();
    for out in fleet.storm("ADD", &all, |_| {}) {
        ledger.added(&out);
    }
    ledger.verify(&fleet);

    // The node reboots: its agent dies with it and starts again. A third
    // of its containers are restored; the rest died.
    fleet.agents[REBOOTED].kill9();
    fleet.agents[REBOOTED].restart();
    let survivors: Vec<&str> = on_node
        .iter()
        .step_by(3)
        .map(|j| j.container.as_str())
        .collect();
    let gc = fleet.gc(REBOOTED, &survivors);
    assert!(gc.success, "GC on {}: {}", node_name(REBOOTED), gc.stdout);
    for job in &on_node {
        if !survivors.contains(&job.container.as_str()) {
            ledger.deleted(&job.container);
        }
    }
    assert_eq!(ledger.on_node(REBOOTED).len(), survivors.len());
    ledger.verify(&fleet);

    // GC on a node whose containers all live frees nothing.
    const UNTOUCHED: usize = 6;
    let live = ledger.on_node(UNTOUCHED);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    assert!(!live.is_empty());
    let gc = fleet.gc(UNTOUCHED, &live);
    assert!(gc.success, "GC on {}: {}", node_name(UNTOUCHED), gc.stdout);
    ledger.verify(&fleet);

    // The rebooted node takes new containers.
    let fresh: Vec<Job> = (0..5)
        .map(|i| Job {
            container: format!("after-reboot-{i}"),
            node: REBOOTED,
            via_app: i % 2 == 1,
        })
        .collect();
    for out in fleet.storm("ADD", &fresh, |_| {}) {
        ledger.added(&out);
    }
    ledger.verify(&fleet);
}

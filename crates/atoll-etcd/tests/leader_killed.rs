//! The leader is killed in the middle of a claims storm: the cluster
//! elects another, and every claim is answered, once, and rightly.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_survive_the_leader_killed_midway() {
    common::storm_with_a_member_killed(23860, common::Victim::Leader).await;
}

//! A follower is killed in the middle of a claims storm: every claim is
//! answered, once, and rightly.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_survive_a_follower_killed_midway() {
    common::storm_with_a_member_killed(23850, common::Victim::Follower).await;
}

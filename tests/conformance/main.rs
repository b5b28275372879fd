//! One conformance suite for every store: the semantics of DESIGN.md —
//! replays, key reuse, takeover, fencing, waiting, retention — checked on the
//! coordinator over each `RecordStore`, with no gRPC in between.
//!
//! The cases ([`cases`]) are plain async functions of a [`harness::Harness`];
//! [`conformance_suite!`] turns each into a test per store. On the memory
//! store they run on tokio's paused clock, so leases lapse and records expire
//! without anyone sleeping; on etcd the same sleeps are real.

#[path = "../common/mod.rs"]
mod common;

mod cases;
mod etcd;
mod harness;
mod memory;
mod sharded;

/// One `#[$test]` per case, each on a fresh harness from `$harness`.
macro_rules! conformance_suite {
    ($test:meta, $harness:path) => {
        crate::conformance_suite!(@cases $test, $harness;
            a_new_key_is_acquired_then_replayed_after_complete,
            a_second_caller_sees_in_progress_while_the_owner_works,
            a_terminal_failure_is_replayed,
            a_reused_key_with_another_request_is_refused_in_every_state,
            concurrent_begins_on_one_key_acquire_exactly_once,
            an_abandoned_attempt_is_taken_over_with_a_higher_token,
            fencing_tokens_grow_with_every_takeover,
            a_stale_owner_is_refused_even_by_the_replica_that_knew_its_attempt,
            a_retryable_failure_releases_the_key_at_once,
            a_repeated_release_is_answered_truthfully_after_a_takeover,
            a_late_completion_is_accepted_when_nobody_took_over,
            repeating_complete_or_fail_is_idempotent,
            a_begin_retried_with_its_request_id_gets_the_same_acquisition,
            a_late_duplicate_of_a_begin_does_not_cut_an_extended_lease_short,
            extend_keeps_an_owner_alive_past_its_original_ttl,
            an_extend_may_not_outlive_the_record,
            retention_expiry_makes_a_key_new_again,
            an_abandoned_record_disappears_after_retention,
            unknown_records_are_not_found,
            a_bogus_token_never_finishes_a_live_attempt,
            namespaces_and_tenants_are_separate_records,
            lookup_shows_the_whole_record,
            a_completion_through_one_replica_is_seen_by_another,
            a_waiter_gets_the_result_when_the_owner_completes,
            a_waiter_gets_a_terminal_failure_when_the_owner_fails,
            exactly_one_waiter_acquires_when_the_owner_lapses,
            the_wait_ends_with_in_progress_when_it_runs_out,
            the_callers_deadline_bounds_the_wait,
            skewed_clocks_neither_take_over_early_nor_forget_early,
            finished_records_are_listed_and_forgotten_on_every_replica,
        );
    };
    (@cases $test:meta, $harness:path; $($case:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $case() {
                let (harness, _store_process) = $harness().await;
                crate::cases::$case(&harness).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

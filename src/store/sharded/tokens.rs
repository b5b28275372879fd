//! Fencing tokens across shards. A record's token is its store revision
//! (48 bits) under its shard's token generation, so that tokens from two
//! clusters never coincide for one key and grow along every move: a shard
//! that receives records in a map change has its generation raised past
//! every shard they come from (`steps`). With generation 0 (one cluster, or
//! no map change yet) a token is the revision itself.

use crate::core::error::Error;
use crate::core::record::{Record, Snapshot, State, Versioned};
use crate::core::store::Expect;

const REVISION_BITS: u32 = 48;
const REVISION_MASK: i64 = (1 << REVISION_BITS) - 1;

/// The token of a record written at `revision` under `generation`.
pub fn token(generation: u64, revision: i64) -> Result<i64, Error> {
    if revision > REVISION_MASK || generation >= 1 << (63 - REVISION_BITS) {
        return Err(Error::Internal(format!(
            "revision {revision} under token generation {generation} does not fit a fencing token"
        )));
    }
    Ok(((generation as i64) << REVISION_BITS) | revision)
}

/// The store revision inside a token.
pub fn revision(token: i64) -> i64 {
    token & REVISION_MASK
}

/// `record` with its token in place of its store revision: for an attempt
/// in progress that a map change moved here, the token it was handed
/// before the move ([`Record::moved_token`]).
pub fn tokened(record: Versioned<Record>) -> Result<Versioned<Record>, Error> {
    let revision = match moved_token(&record.value) {
        Some(moved) => moved,
        None => token(record.value.token_generation, record.revision)?,
    };
    Ok(Versioned { revision, ..record })
}

/// The token a moved attempt in progress keeps, if `record` is one.
pub fn moved_token(record: &Record) -> Option<i64> {
    (record.state == State::InProgress && record.moved_token != 0).then_some(record.moved_token as i64)
}

/// What the coordinator `decided` (in fencing tokens), compared on the
/// store revision of `snapshot`'s record where it names a moved attempt by
/// the token its owner holds ([`Record::moved_token`]), which the store
/// cannot compare. Whole tokens are matched: a token is unique to one key
/// across clusters, a revision alone is not.
pub fn on_moved(decided: Expect, snapshot: &Snapshot) -> Option<Expect> {
    let record = snapshot.record.as_ref()?;
    let moved = moved_token(&record.value)?;
    match decided {
        Expect::Token(token) if token as i64 == moved => Some(Expect::Token(record.revision as u64)),
        Expect::Unchanged { record_revision, lock_revision } if record_revision == moved => {
            Some(Expect::Unchanged { record_revision: record.revision, lock_revision })
        }
        _ => None,
    }
}

/// `snapshot` as the coordinator sees it: the record's revision is its token.
pub fn snapshot(snapshot: Snapshot) -> Result<Snapshot, Error> {
    Ok(Snapshot { record: snapshot.record.map(tokened).transpose()?, ..snapshot })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_zero_leaves_the_revision_and_a_higher_one_outranks_every_revision() {
        assert_eq!(token(0, 42).unwrap(), 42);
        let raised = token(1, 2).unwrap();
        assert!(raised > token(0, REVISION_MASK).unwrap());
        assert_eq!(revision(raised), 2);
        assert!(token(0, REVISION_MASK + 1).is_err());
    }
}

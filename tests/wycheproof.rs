//! Runs every Wycheproof JSON Web Signature vector through our key loading
//! ([`Key::from_jwk`]) and signature verification ([`KeySet::verify_signature`]).
//!
//! Every `invalid` vector must be refused (by key loading or by verification), every `valid`
//! vector accepted; `acceptable` outcomes are only reported. JSON-serialized vectors (flag
//! `JsonSerialization`) are not compact JWS, so they are `invalid` for us too. Vectors we
//! knowingly disagree with are listed by `tcId`, with the reason, in [`EXCEPTIONS`]; an
//! entry that no longer names an existing, disagreeing vector fails the test.
//!
//! The vectors live outside the crate, in `../shared/vectors/wycheproof/`. Without them the
//! test fails under `CI=true` and is skipped with a notice otherwise.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tower_jwt_refresh::keys::{Key, KeySet};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/wycheproof/json_web_signature_test.json"
);

/// Vectors whose expected result we knowingly do not reproduce: `(tcId, reason)`.
///
/// Each entry was checked by hand; none hides a bug of ours.
const EXCEPTIONS: &[(u64, &str)] = &[
    (
        346,
        "RFC 7520 Figure 20 is a PS384 JWS, but Wycheproof gives its key `alg: PS256`; keys \
         are bound to their one algorithm (as Wycheproof's own WrongPrimitive vectors \
         require), so the token is refused with TokenError::Algorithm",
    ),
    (
        347,
        "RFC 7520 Figure 27 is ES512 with a P-521 key (`alg: ES521`); ES512 is not supported \
         by jsonwebtoken nor by this crate, so key loading refuses it (KeyError::Unsupported)",
    ),
    (
        350,
        "as 346: PS384 JWS, key bound to PS256 (same key with `key_ops: [verify]`)",
    ),
    (
        351,
        "as 347: ES512 / P-521 is unsupported (same key with `key_ops: [verify]`)",
    ),
    (
        367,
        "vector defect: its jws is byte-identical to tcId 357 (`valid`); the `=` padding the \
         name promises is missing, so it cannot be `invalid` while 357 is `valid`",
    ),
    (
        370,
        "vector defect: as 367, byte-identical to the `valid` tcId 357",
    ),
    (
        372,
        "vector defect: rated `valid` although a `?` sits inside the base64url header; RFC \
         7515 forbids characters outside base64url, and tcIds 361/363/364/371 (`invalid`) \
         say the same; we refuse it as TokenError::Malformed",
    ),
    (
        373,
        "vector defect: as 372, a `?` inside the base64url payload rated `valid`",
    ),
];

#[derive(Deserialize)]
struct File {
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
    #[serde(rename = "testGroups")]
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    private: Option<Value>,
    public: Option<Value>,
    tests: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    #[serde(rename = "tcId")]
    tc_id: u64,
    comment: String,
    jws: String,
    result: Expected,
    flags: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Valid,
    Invalid,
    Acceptable,
}

/// Loads the group's key: the `public` JWK when present, else the `private` one (for `oct`
/// keys the private JWK is the key). Every HMAC key in this file is 32 bytes, which
/// `from_jwk` accepts for HS256, so no group needs `Key::hmac_allow_short`; a future short
/// key would make its `valid` vectors fail here, loudly, rather than be loaded leniently.
fn load_key(group: &Group) -> Result<KeySet, String> {
    let jwk = group
        .public
        .as_ref()
        .or(group.private.as_ref())
        .ok_or("group has no key")?;
    let json = serde_json::to_vec(jwk).map_err(|e| e.to_string())?;
    Key::from_jwk(json)
        .map(KeySet::from)
        .map_err(|e| format!("key refused: {e:?}"))
}

#[test]
fn wycheproof_json_web_signature() {
    let text = match std::fs::read_to_string(VECTORS) {
        Ok(text) => text,
        Err(e) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("CI=true but the Wycheproof vectors are unreadable at {VECTORS}: {e}")
        }
        Err(e) => {
            eprintln!("notice: skipping Wycheproof vectors, {VECTORS} is unreadable: {e}");
            return;
        }
    };
    let file: File = serde_json::from_str(&text).expect("vectors file is valid JSON");

    let exceptions: BTreeMap<u64, &str> = EXCEPTIONS.iter().copied().collect();
    assert_eq!(
        exceptions.len(),
        EXCEPTIONS.len(),
        "a tcId is listed twice in EXCEPTIONS"
    );

    let mut seen = BTreeMap::new();
    let (mut valid_accepted, mut invalid_rejected) = (0, 0);
    let mut acceptable = Vec::new();
    let mut used_exceptions = Vec::new();
    let mut failures = Vec::new();

    for group in &file.test_groups {
        let keys = load_key(group);
        for v in &group.tests {
            assert!(
                seen.insert(v.tc_id, v.result).is_none(),
                "tcId {} appears twice",
                v.tc_id
            );
            let outcome = match &keys {
                Ok(keys) => keys.verify_signature(&v.jws).map_err(|e| format!("{e:?}")),
                Err(e) => Err(e.clone()),
            };
            let agrees = match v.result {
                Expected::Valid => outcome.is_ok(),
                Expected::Invalid => outcome.is_err(),
                Expected::Acceptable => {
                    acceptable.push(format!("tcId {} ({}): {outcome:?}", v.tc_id, v.comment));
                    continue;
                }
            };
            let exception = exceptions.get(&v.tc_id);
            match (agrees, exception) {
                (true, None) if v.result == Expected::Valid => valid_accepted += 1,
                (true, None) => invalid_rejected += 1,
                (false, Some(_)) => used_exceptions.push(v.tc_id),
                (true, Some(reason)) => failures.push(format!(
                    "tcId {} is in EXCEPTIONS ({reason}) but now agrees with `{:?}`: remove it",
                    v.tc_id, v.result
                )),
                (false, None) => failures.push(format!(
                    "tcId {} ({}, flags {:?}): expected {:?}, got {outcome:?}\n    jws: {}",
                    v.tc_id, v.comment, v.flags, v.result, v.jws
                )),
            }
        }
    }

    assert_eq!(
        seen.len(),
        file.number_of_tests,
        "numberOfTests disagrees with the vectors read"
    );
    for tc_id in exceptions.keys() {
        match seen.get(tc_id) {
            None => failures.push(format!("tcId {tc_id} is in EXCEPTIONS but names no vector")),
            Some(Expected::Acceptable) => failures.push(format!(
                "tcId {tc_id} is in EXCEPTIONS but is `acceptable`, which never fails the test"
            )),
            Some(_) => {}
        }
    }
    for line in &acceptable {
        println!("acceptable: {line}");
    }
    println!(
        "wycheproof jws: {} vectors: {valid_accepted} valid accepted, {invalid_rejected} \
         invalid rejected, {} acceptable, {} exceptions",
        seen.len(),
        acceptable.len(),
        used_exceptions.len()
    );
    println!("exceptions (expected result not reproduced): {used_exceptions:?}");
    assert!(
        failures.is_empty(),
        "{} vector(s) disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! The server-side Lua scripts of [`RedisStore`](super::RedisStore), and the check that every
//! key they touch is one they are given in `KEYS`.

use std::sync::Arc;

use redis::Script;

/// The server-side scripts, one per operation; each file documents its keys, arguments and
/// replies. Those that revoke start with `announce.lua`, which records and publishes the
/// revocation.
pub(crate) struct Scripts {
    pub(super) create: Script,
    pub(super) rotate: Script,
    pub(super) revoke: Script,
    /// Reads a bucket's index of recent revocations (the propagation worker's).
    pub(crate) resync: Arc<Script>,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            create: Script::new(include_str!("lua/create.lua")),
            rotate: Script::new(concat!(
                include_str!("lua/announce.lua"),
                include_str!("lua/rotate.lua")
            )),
            revoke: Script::new(concat!(
                include_str!("lua/announce.lua"),
                include_str!("lua/revoke.lua")
            )),
            resync: Arc::new(Script::new(include_str!("lua/resync.lua"))),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The commands of every `redis.call` in `lua`, each with its arguments as written.
    fn calls(lua: &str) -> Vec<(String, Vec<String>)> {
        lua.split("redis.call(")
            .skip(1)
            .map(|call| {
                let (mut depth, mut end) = (0, call.len());
                for (i, c) in call.char_indices() {
                    match c {
                        '(' | '[' => depth += 1,
                        ']' => depth -= 1,
                        ')' if depth == 0 => {
                            end = i;
                            break;
                        }
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
                let mut args = call[..end].split(',').map(|a| a.trim().to_owned());
                let command = args.next().unwrap().trim_matches('\'').to_owned();
                (command, args.collect())
            })
            .collect()
    }

    /// On Redis Cluster a script may touch only keys of the slot its `KEYS` route it to: every
    /// key a script reads or writes must come from `KEYS`, never be built inside it.
    #[test]
    fn every_key_a_script_touches_comes_from_keys() {
        let scripts = [
            include_str!("lua/create.lua"),
            include_str!("lua/rotate.lua"),
            include_str!("lua/revoke.lua"),
            include_str!("lua/announce.lua"),
            include_str!("lua/resync.lua"),
        ];
        let mut seen = 0;
        for script in scripts {
            for (command, args) in calls(script) {
                // How many leading arguments are keys: all of them for DEL and EXISTS. A
                // channel counts as a key: it must be in the script's slot too.
                let keys = match command.as_str() {
                    "DEL" | "EXISTS" => args.len(),
                    "GET" | "SET" | "HSET" | "HMGET" | "EXPIRE" | "ZADD" | "ZSCORE"
                    | "ZREMRANGEBYSCORE" | "ZRANGEBYSCORE" | "SPUBLISH" | "PUBLISH" => 1,
                    "TIME" => 0,
                    other => panic!("{other}: say which of its arguments are keys"),
                };
                for key in &args[..keys] {
                    let index = key.strip_prefix("KEYS[").and_then(|k| k.strip_suffix(']'));
                    assert!(
                        index.is_some_and(|i| i.parse::<u8>().is_ok()),
                        "{command} {key}: not a KEYS entry"
                    );
                }
                seen += 1;
            }
        }
        let written: usize = scripts
            .iter()
            .map(|s| s.matches("redis.call(").count())
            .sum();
        assert_eq!(seen, written, "every `redis.call` was checked");
    }

    #[test]
    fn a_key_built_inside_a_script_is_caught() {
        let built = "redis.call('SET', KEYS[1] .. ':x', 1)";
        let (command, args) = calls(built).pop().unwrap();
        assert_eq!(command, "SET");
        assert_ne!(
            args[0]
                .strip_prefix("KEYS[")
                .and_then(|k| k.strip_suffix(']')),
            Some("1")
        );
    }
}

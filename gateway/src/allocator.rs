//! The memory allocator's one setting: glibc's allocator with a single arena. By default glibc
//! gives each busy thread an arena of its own (the runtime's workers, the parking lot's thread,
//! SQLite's), and a flood of connects leaves them fragmented; one arena holds the same sessions
//! in 6–11 % less memory, at no CPU cost the measurements could show (`BENCHMARKS.md`, "Memory
//! after a flood: glibc's arenas"). A running process cannot change the limit for itself without
//! `unsafe` (`mallopt`), which this workspace forbids, so the gateway starts itself again with
//! the tunable set — unless the environment already chooses (`GLIBC_TUNABLES` naming
//! `glibc.malloc.arena_max`, or `MALLOC_ARENA_MAX`): the operator's choice wins.

/// The tunable the gateway runs with.
pub const ONE_ARENA: &str = "glibc.malloc.arena_max=1";

/// The `GLIBC_TUNABLES` to run with, given the environment's (`tunables`) and whether it sets
/// `MALLOC_ARENA_MAX`: [`ONE_ARENA`] added to what is there, or `None` when the environment
/// already chooses the arena limit.
pub fn tunables_with_one_arena(tunables: Option<&str>, malloc_arena_max: bool) -> Option<String> {
    let tunables = tunables.unwrap_or("");
    if malloc_arena_max || tunables.split(':').any(|t| t.trim_start().starts_with("glibc.malloc.arena_max=")) {
        return None;
    }
    Some(if tunables.is_empty() { ONE_ARENA.to_owned() } else { format!("{tunables}:{ONE_ARENA}") })
}

/// Replaces the process with the same program, arguments and environment plus [`ONE_ARENA`]
/// (same process id: supervisors see nothing), when glibc's allocator is in use and the
/// environment does not choose the arena limit. Returns only when it did not: `None` when there
/// was nothing to do, else why the replacement failed (the gateway then runs as it is).
pub fn run_with_one_arena() -> Option<std::io::Error> {
    if cfg!(not(all(target_os = "linux", target_env = "gnu"))) || cfg!(feature = "mimalloc") {
        return None;
    }
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    let tunables = tunables_with_one_arena(tunables.as_deref(), std::env::var_os("MALLOC_ARENA_MAX").is_some())?;
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => return Some(e),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program);
    if let Some(name) = args.next() {
        std::os::unix::process::CommandExt::arg0(&mut command, name);
    }
    Some(std::os::unix::process::CommandExt::exec(command.args(args).env("GLIBC_TUNABLES", tunables)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_arena_is_added_unless_the_environment_chooses() {
        assert_eq!(tunables_with_one_arena(None, false).as_deref(), Some(ONE_ARENA));
        assert_eq!(tunables_with_one_arena(Some(""), false).as_deref(), Some(ONE_ARENA));
        assert_eq!(
            tunables_with_one_arena(Some("glibc.malloc.tcache_count=0"), false).as_deref(),
            Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1")
        );
        assert_eq!(tunables_with_one_arena(Some("glibc.malloc.arena_max=4"), false), None, "the operator's limit");
        assert_eq!(tunables_with_one_arena(Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=8"), false), None);
        assert_eq!(tunables_with_one_arena(None, true), None, "MALLOC_ARENA_MAX chooses too");
        // Once added, a second start adds nothing: the replacement does not repeat.
        let once = tunables_with_one_arena(None, false);
        assert_eq!(tunables_with_one_arena(once.as_deref(), false), None);
    }
}

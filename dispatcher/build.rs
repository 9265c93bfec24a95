//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds `migrations/` at compile
//! time, and Cargo reruns a macro only when a file it knows changes (a new file is not one).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

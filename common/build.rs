// Embedded migrations (sqlx::migrate!) must be re-read when a migration is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

//! A MariaDB database of its own for one test: created on the local server (127.0.0.1:3306,
//! root, no password — `ops/services.sh` makes sure it runs) and dropped when the handle goes.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, MySqlConnection};

/// The local server, without a database.
pub const SERVER_URL: &str = "mysql://root@127.0.0.1:3306";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestDatabase {
    pub name: String,
    /// `mysql://root@127.0.0.1:3306/NAME`
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!(
            "pushgate_t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            pushgate_protocol::now_ms() % 1_000_000
        );
        let mut conn =
            MySqlConnection::connect(SERVER_URL).await.expect("MariaDB on 127.0.0.1:3306 (run ops/services.sh)");
        sqlx::query(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        Self { url: format!("{SERVER_URL}/{name}"), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code's reach: a short-lived thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = MySqlConnection::connect(SERVER_URL).await {
                    // Connections of the test's pools may still be open (and hold locks) while
                    // the test's runtime is busy dropping things: end them first.
                    let ids: Vec<(u64,)> = sqlx::query_as("SELECT id FROM information_schema.processlist WHERE db = ?")
                        .bind(&name)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap_or_default();
                    for (id,) in ids {
                        let _ = sqlx::query(&format!("KILL {id}")).execute(&mut conn).await;
                    }
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

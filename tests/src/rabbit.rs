//! A RabbitMQ virtual host of its own for one test (created with `rabbitmqctl`, deleted on
//! drop), so exchanges and queues of parallel tests never meet. The names inside it are the real
//! ones (`pushgate.publish`, `pushgate.dead`, …).

use std::sync::atomic::{AtomicU32, Ordering};

use lapin::{Connection, ConnectionProperties};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct TestVhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl (run ops/services.sh)");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestVhost {
    pub fn create() -> Self {
        let name = format!("pushgate_t_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    /// `amqp://guest:guest@127.0.0.1:5672/NAME`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// A client connection, as a backend would open one.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url(), ConnectionProperties::default()).await.expect("connect to RabbitMQ")
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

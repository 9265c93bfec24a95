//! A command-line client: connects, prints every server frame as a JSON line (and Close frames
//! as `# closed CODE reason`), and sends each line typed on stdin as a text frame.

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Client endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// A session token (from `pushgate-gateway token --user …`).
    #[arg(long, env = "PUSHGATE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Resume after this seq.
    #[arg(long)]
    pub last_seq: Option<u64>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut url = format!("{}?token={}", args.url, args.token);
    if let Some(seq) = args.last_seq {
        url.push_str(&format!("&last_seq={seq}"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.context("connecting")?;
    let (mut sink, mut stream) = ws.split();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => println!("# closed {} {}", u16::from(f.code), f.reason),
                        None => println!("# closed"),
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("connection lost"),
                None => return Ok(()),
            },
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) if !line.trim().is_empty() => sink.send(Message::text(line)).await?,
                Some(_) => {}
                None => stdin_open = false,
            },
        }
    }
}

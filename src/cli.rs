//! `callbackd callbacks …`: operators' commands, straight on the store. Output is JSON.

use anyhow::{anyhow, bail};
use callbacks::{
    Actor, CallbackStore, Callbacks, Channel, ConfirmationId, Filter, Media, Modification,
    ModifyError, NewCallback, RequestedTime, Source, State,
};
use chrono::Utc;
use clap::Subcommand;
use rand::{rngs::StdRng, SeedableRng};
use serde_json::json;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum CallbacksCommand {
    /// Create a callback and print it with its confirmation ID.
    Create {
        #[arg(long)]
        queue: String,
        /// E.164 number (voice, sms) or SIP URI (sip).
        #[arg(long)]
        address: String,
        /// The skill (department); defaults to the queue's first.
        #[arg(long)]
        skill: Option<String>,
        /// voice, sip or sms.
        #[arg(long, default_value = "voice")]
        media: String,
        #[arg(long)]
        name: Option<String>,
        /// "asap" or an RFC 3339 time.
        #[arg(long, default_value = "asap")]
        at: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
    },
    /// Print a callback and its history.
    Show { confirmation_id: String },
    /// List callbacks in dialing order.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        skill: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Modify a callback: reschedule WHEN | change-address ADDRESS | change-media MEDIA
    /// [ADDRESS] | change-skill SKILL | pause | resume | cancel.
    Modify {
        confirmation_id: String,
        action: String,
        args: Vec<String>,
    },
}

fn print(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

fn parse_id(text: &str) -> anyhow::Result<ConfirmationId> {
    ConfirmationId::parse(text).map_err(|e| anyhow!("`{text}` is not a confirmation ID: {e}"))
}

fn modification(action: &str, args: &[String]) -> anyhow::Result<Modification> {
    let media = |t: &str| {
        Media::parse(t).ok_or_else(|| anyhow!("unknown media `{t}`: use voice, sip or sms"))
    };
    Ok(match (action, args) {
        ("reschedule", [at]) => Modification::Reschedule { at: RequestedTime::parse(at).map_err(|e| anyhow!(e))? },
        ("change-address", [address]) => Modification::ChangeAddress { address: address.clone() },
        ("change-media", [m]) => Modification::ChangeMedia { media: media(m)?, address: None },
        ("change-media", [m, address]) => Modification::ChangeMedia { media: media(m)?, address: Some(address.clone()) },
        ("change-skill", [skill]) => Modification::ChangeSkill { skill: skill.clone() },
        ("pause", []) => Modification::Pause {},
        ("resume", []) => Modification::Resume {},
        ("cancel", []) => Modification::Cancel {},
        _ => bail!(
            "`{action}` with {} argument(s) is not a modification: use reschedule WHEN, change-address ADDRESS, \
             change-media MEDIA [ADDRESS], change-skill SKILL, pause, resume or cancel",
            args.len()
        ),
    })
}

pub async fn run(config: Config, command: CallbacksCommand) -> anyhow::Result<()> {
    let store = store::Store::open(config.store.url.expose()).await?;
    let callbacks = Callbacks::new(store, config.policy());
    let actor = Actor::new(
        Channel::Cli,
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
    );
    let mut rng = StdRng::from_entropy();
    let result = match command {
        CallbacksCommand::Create {
            queue,
            address,
            skill,
            media,
            name,
            at,
            priority,
        } => {
            let new = NewCallback {
                queue,
                skill,
                media: Media::parse(&media)
                    .ok_or_else(|| anyhow!("unknown media `{media}`: use voice, sip or sms"))?,
                address,
                customer_name: name,
                at: RequestedTime::parse(&at).map_err(|e| anyhow!(e))?,
                time_zone: None,
                priority,
                context: json!({}),
                enqueued_at: None,
            };
            let callback = callbacks
                .create(&mut rng, Utc::now(), &actor, Source::Api, new)
                .await?;
            print(&callback);
            Ok(())
        }
        CallbacksCommand::Show { confirmation_id } => {
            let id = parse_id(&confirmation_id)?;
            let (callback, history) = callbacks
                .show(&id)
                .await?
                .ok_or_else(|| anyhow!("no callback has confirmation ID {id}"))?;
            let mut body = serde_json::to_value(callback)?;
            body["history"] = serde_json::to_value(history)?;
            print(&body);
            Ok(())
        }
        CallbacksCommand::List {
            state,
            queue,
            skill,
            limit,
        } => {
            let state = state
                .map(|s| State::parse(&s).ok_or_else(|| anyhow!("unknown state `{s}`")))
                .transpose()?;
            print(
                &callbacks
                    .store
                    .list(&Filter {
                        state,
                        queue,
                        skill,
                        limit,
                    })
                    .await?,
            );
            Ok(())
        }
        CallbacksCommand::Modify {
            confirmation_id,
            action,
            args,
        } => {
            let id = parse_id(&confirmation_id)?;
            let m = modification(&action, &args)?;
            match callbacks
                .modify(&mut rng, Utc::now(), &actor, &id, None, &m)
                .await
            {
                Ok((callback, receipt)) => {
                    print(&json!({"receipt": receipt, "callback": callback}));
                    Ok(())
                }
                Err(ModifyError::Refused(r)) => {
                    print(&json!({"receipt": r.receipt, "error": r.rejection.to_string()}));
                    Err(anyhow!("refused: {}", r.rejection))
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    callbacks.store.close().await;
    result
}

//! The image's entrypoint and command, which the gate's command line puts after the gate.
//!
//! An engine reads them by inspecting the image before a create. What it read is kept per
//! engine endpoint in this process (a bench, a Python launcher, any long-lived launcher), and
//! how far a kept answer may be reused is the engine's [`Reuse`]:
//!
//! - [`Reuse::Checked`] (Docker, Podman): any name, the answer's image id with it. A name can
//!   move to another image between two launches, or between the inspect and the create; the
//!   engine then says which image the command line was built from
//!   ([`crate::engine::Created::built_for`]), the audit before start compares it with the image
//!   the container runs ([`mount_plan_spec::audit_image`]), and the lifecycle creates once
//!   more from a fresh inspect ([`Reuse::Fresh`]) on a difference. A kept answer is never what
//!   a container runs unchecked.
//! - [`Reuse::ByContent`] (engines that do not report which image a container runs): only an
//!   image named by its content ([`ImageRef::content_digest`]), which cannot move.
//!
//! An image removed after it was read here makes the create fail as it would have made the
//! inspect fail (the image is not found).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};

use mount_plan_spec::ImageRef;

use crate::container::LaunchError;

/// An image's own entrypoint and command (empty where the image sets none), as one inspect
/// read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
    /// The image's command.
    pub cmd: Vec<String>,
    /// The image's id, as the engine's image inspect reports it (`None`: not reported; such
    /// an answer is kept only for an image named by its content).
    pub id: Option<String>,
}

/// How far an engine may reuse what this process read of an image before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Only for an image named by its content: the engine cannot tell which image a container
    /// runs, so a name that can move is inspected every time.
    ByContent,
    /// For any name whose answer carried the image's id: the audit before start checks that
    /// the container runs that image.
    Checked,
    /// Not at all: inspect now and keep the answer for the next launch (a container created
    /// from a kept answer ran another image).
    Fresh,
}

/// How many images one process keeps; when full, the table starts again (a launcher that
/// cycles through more images than this inspects them as if nothing were kept).
const KEPT: usize = 256;

/// What was read of images, per engine endpoint and image name.
#[derive(Debug, Default)]
pub struct ImageCommands(Mutex<HashMap<(String, String), ImageCommand>>);

impl ImageCommands {
    /// `image`'s entrypoint and command on the engine at `endpoint`: kept from before where
    /// `reuse` allows it, else from `inspect` (and then kept where `reuse` allows it).
    pub async fn get<F, Fut>(
        &self,
        endpoint: &str,
        image: &ImageRef,
        reuse: Reuse,
        inspect: F,
    ) -> Result<ImageCommand, LaunchError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ImageCommand, LaunchError>>,
    {
        let by_content = image.content_digest().is_some();
        let key = (endpoint.to_owned(), image.as_str().to_owned());
        if reuse != Reuse::Fresh {
            if let Some(kept) = self.lock().get(&key) {
                if by_content || (reuse == Reuse::Checked && kept.id.is_some()) {
                    return Ok(kept.clone());
                }
            }
        }
        let read = inspect().await?;
        if by_content || (reuse != Reuse::ByContent && read.id.is_some()) {
            let mut table = self.lock();
            if table.len() >= KEPT {
                table.clear();
            }
            table.insert(key, read.clone());
        }
        Ok(read)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ImageCommand>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`ImageCommands::get`] on this process's one table.
pub async fn image_command<F, Fut>(
    endpoint: &str,
    image: &ImageRef,
    reuse: Reuse,
    inspect: F,
) -> Result<ImageCommand, LaunchError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<ImageCommand, LaunchError>>,
{
    static TABLE: OnceLock<ImageCommands> = OnceLock::new();
    TABLE
        .get_or_init(Default::default)
        .get(endpoint, image, reuse, inspect)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An answer whose entrypoint is `word`, from the image with id `word` (the id is what a
    /// checked reuse keeps).
    fn command(word: &str) -> ImageCommand {
        ImageCommand {
            entrypoint: vec![word.to_owned()],
            cmd: vec!["-c".to_owned()],
            id: Some(format!("id-{word}")),
        }
    }

    /// Reads `image` on `endpoint` from `table` with `reuse`, through a counting inspect
    /// answering `answer`.
    async fn read_as(
        table: &ImageCommands,
        (endpoint, image): (&str, &str),
        reuse: Reuse,
        answer: ImageCommand,
        inspects: &AtomicUsize,
    ) -> ImageCommand {
        let image: ImageRef = image.parse().unwrap();
        table
            .get(endpoint, &image, reuse, || async {
                inspects.fetch_add(1, Ordering::SeqCst);
                Ok(answer)
            })
            .await
            .unwrap()
    }

    /// [`read_as`] by content only, answering [`command`]`(word)`.
    async fn read(
        table: &ImageCommands,
        endpoint: &str,
        image: &str,
        word: &str,
        inspects: &AtomicUsize,
    ) -> ImageCommand {
        let at = (endpoint, image);
        read_as(table, at, Reuse::ByContent, command(word), inspects).await
    }

    #[tokio::test]
    async fn an_image_named_by_content_is_inspected_once_per_endpoint() {
        let (table, inspects) = (ImageCommands::default(), AtomicUsize::new(0));
        let id = format!("sha256:{}", "a1".repeat(32));
        assert_eq!(
            read(&table, "e1", &id, "first", &inspects).await,
            command("first")
        );
        assert_eq!(
            read(&table, "e1", &id, "second", &inspects).await,
            command("first"),
            "the kept answer, not a second inspect"
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 1);
        let other = format!("sha256:{}", "d4".repeat(32));
        read(&table, "e1", &other, "x", &inspects).await;
        read(&table, "e1", &id, "x", &inspects).await;
        assert_eq!(inspects.load(Ordering::SeqCst), 2, "both kept side by side");
        assert_eq!(
            read(&table, "e2", &id, "other", &inspects).await,
            command("other"),
            "another engine (another platform, perhaps) is asked itself"
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 3);
        let unidentified = ImageCommand {
            id: None,
            ..command("no-id")
        };
        let at = ("e3", id.as_str());
        read_as(
            &table,
            at,
            Reuse::ByContent,
            unidentified.clone(),
            &inspects,
        )
        .await;
        assert_eq!(
            read_as(&table, at, Reuse::Checked, command("later"), &inspects).await,
            unidentified,
            "a name by content cannot move: kept even with no id to check"
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_tag_is_inspected_every_time_where_the_engine_cannot_check_it() {
        let (table, inspects) = (ImageCommands::default(), AtomicUsize::new(0));
        assert_eq!(
            read(&table, "e1", "img:tag", "first", &inspects).await,
            command("first")
        );
        assert_eq!(
            read(&table, "e1", "img:tag", "moved", &inspects).await,
            command("moved"),
            "the tag may have moved"
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 2);
        let at = ("e1", "img:tag");
        assert_eq!(
            read_as(&table, at, Reuse::Checked, command("checked"), &inspects).await,
            command("checked"),
            "nothing was kept by content only"
        );
    }

    #[tokio::test]
    async fn a_tag_is_kept_with_its_image_id_where_the_engine_checks_it() {
        let (table, inspects) = (ImageCommands::default(), AtomicUsize::new(0));
        let at = ("e1", "img:tag");
        let first = read_as(&table, at, Reuse::Checked, command("a"), &inspects).await;
        assert_eq!(first, command("a"));
        assert_eq!(
            read_as(&table, at, Reuse::Checked, command("b"), &inspects).await,
            command("a"),
            "kept, with the id the audit compares"
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 1);
        // The container ran another image: read again, and the next launch takes that.
        assert_eq!(
            read_as(&table, at, Reuse::Fresh, command("b"), &inspects).await,
            command("b")
        );
        assert_eq!(
            read_as(&table, at, Reuse::Checked, command("c"), &inspects).await,
            command("b")
        );
        assert_eq!(inspects.load(Ordering::SeqCst), 2);
        // Only by content where the engine cannot check which image a container runs.
        assert_eq!(
            read_as(&table, at, Reuse::ByContent, command("d"), &inspects).await,
            command("d")
        );
        // An answer with no id cannot be checked: never kept for a name that can move.
        let at = ("e1", "unidentified:tag");
        let no_id = ImageCommand {
            id: None,
            ..command("x")
        };
        for _ in 0..2 {
            read_as(&table, at, Reuse::Checked, no_id.clone(), &inspects).await;
        }
        assert_eq!(inspects.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_failed_inspect_is_not_kept() {
        let id: ImageRef = format!("sha256:{}", "b2".repeat(32)).parse().unwrap();
        let table = ImageCommands::default();
        let failed = table
            .get("e1", &id, Reuse::Checked, || async {
                Err(LaunchError::ImageNotFound {
                    image: id.to_string(),
                    source: "no such image".into(),
                })
            })
            .await;
        assert!(matches!(failed, Err(LaunchError::ImageNotFound { .. })));
        let inspects = AtomicUsize::new(0);
        read(&table, "e1", id.as_str(), "pulled", &inspects).await;
        assert_eq!(
            inspects.load(Ordering::SeqCst),
            1,
            "asked again after the failure"
        );
    }

    #[tokio::test]
    async fn the_process_table_keeps_what_it_read() {
        let id: ImageRef = format!("sha256:{}", "c3".repeat(32)).parse().unwrap();
        let inspects = AtomicUsize::new(0);
        for _ in 0..2 {
            let got = image_command("process-table", &id, Reuse::ByContent, || async {
                inspects.fetch_add(1, Ordering::SeqCst);
                Ok(command("kept"))
            })
            .await
            .unwrap();
            assert_eq!(got, command("kept"));
        }
        assert_eq!(inspects.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_table_starts_again() {
        let (table, inspects) = (ImageCommands::default(), AtomicUsize::new(0));
        let endpoint = "full-table";
        let ids: Vec<String> = (0..=KEPT).map(|i| format!("{i:064x}")).collect();
        for id in &ids {
            read(&table, endpoint, id, "x", &inspects).await;
        }
        assert!(table.lock().len() <= KEPT, "never more than KEPT");
        read(&table, endpoint, &ids[KEPT], "x", &inspects).await;
        assert_eq!(
            inspects.load(Ordering::SeqCst),
            KEPT + 1,
            "the last one read is kept after the table started again"
        );
    }
}

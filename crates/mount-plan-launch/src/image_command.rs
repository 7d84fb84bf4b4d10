//! The image's entrypoint and command, which the gate's command line puts after the gate.
//!
//! An engine reads them by inspecting the image before each create. For an image named by its
//! content ([`ImageRef::content_digest`]: a full image id or a digest-pinned name) the answer
//! cannot change, so it is read once per engine endpoint in this process (a bench, a Python
//! launcher, any long-lived launcher) and taken from here after that. An image named by a tag
//! is inspected every time: a tag can move between two launches, and the command line must
//! be the image's that the engine is about to run. An image removed after it was read here
//! makes the create fail as it would have made the inspect fail (the image is not found).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};

use mount_plan_spec::ImageRef;

use crate::container::LaunchError;

/// An image's own entrypoint and command (empty where the image sets none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
    /// The image's command.
    pub cmd: Vec<String>,
}

/// How many images one process keeps; when full, the table starts again (a launcher that
/// cycles through more images than this inspects them as if nothing were kept).
const KEPT: usize = 256;

/// Images read by content, per engine endpoint.
#[derive(Debug, Default)]
pub struct ImageCommands(Mutex<HashMap<(String, String), ImageCommand>>);

impl ImageCommands {
    /// `image`'s entrypoint and command on the engine at `endpoint`: kept from before when
    /// `image` is named by its content and was read here, else from `inspect` (and kept when
    /// `image` is named by its content).
    pub async fn get<F, Fut>(
        &self,
        endpoint: &str,
        image: &ImageRef,
        inspect: F,
    ) -> Result<ImageCommand, LaunchError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ImageCommand, LaunchError>>,
    {
        let key = image
            .content_digest()
            .map(|_| (endpoint.to_owned(), image.as_str().to_owned()));
        if let Some(kept) = key.as_ref().and_then(|key| self.lock().get(key).cloned()) {
            return Ok(kept);
        }
        let read = inspect().await?;
        if let Some(key) = key {
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
    inspect: F,
) -> Result<ImageCommand, LaunchError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<ImageCommand, LaunchError>>,
{
    static TABLE: OnceLock<ImageCommands> = OnceLock::new();
    TABLE
        .get_or_init(Default::default)
        .get(endpoint, image, inspect)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn command(word: &str) -> ImageCommand {
        ImageCommand {
            entrypoint: vec![word.to_owned()],
            cmd: vec!["-c".to_owned()],
        }
    }

    /// Reads `image` on `endpoint` from `table` through a counting inspect answering `word`.
    async fn read(
        table: &ImageCommands,
        endpoint: &str,
        image: &str,
        word: &str,
        inspects: &AtomicUsize,
    ) -> ImageCommand {
        let image: ImageRef = image.parse().unwrap();
        table
            .get(endpoint, &image, || async {
                inspects.fetch_add(1, Ordering::SeqCst);
                Ok(command(word))
            })
            .await
            .unwrap()
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
    }

    #[tokio::test]
    async fn an_image_named_by_a_tag_is_inspected_every_time() {
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
    }

    #[tokio::test]
    async fn a_failed_inspect_is_not_kept() {
        let id: ImageRef = format!("sha256:{}", "b2".repeat(32)).parse().unwrap();
        let table = ImageCommands::default();
        let failed = table
            .get("e1", &id, || async {
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
            let got = image_command("process-table", &id, || async {
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

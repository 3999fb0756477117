"""The ``download-fineweb`` stage: a pipeline's first step on GPUs (rank 0 downloads, the other
ranks wait; shards already present are kept, so a resumed run only fetches what is missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanochat.core.errors import StageError
from nanochat.core.progress import Progress
from nanochat_datasets.download import download_shards, shard_name
from nanochat_datasets.options import (
    DownloadStageOptions,
    default_fineweb_dir,
    default_fineweb_url,
)


class DownloadFinewebStage:
    """Download FineWeb-Edu shards ``0 .. num_shards-1``."""

    def __init__(self, options: DownloadStageOptions) -> None:
        self.o = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Download what is missing (on the main process); every rank returns the summary."""
        target = Path(self.o.path or default_fineweb_dir())
        count = self.o.num_shards
        result: dict[str, Any] = {"directory": str(target), "shards": count}
        if ctx.is_main:
            present = sum((target / shard_name(i)).exists() for i in range(count))
            with Progress(count, ctx.stage_name, "shards", initial=present) as bar:
                report = download_shards(
                    target,
                    count,
                    self.o.base_url or default_fineweb_url(),
                    workers=self.o.workers,
                    retries=self.o.retries,
                    on_done=lambda name: bar.update(1, last=name),
                )
            if report.failed:
                first, reason = next(iter(sorted(report.failed.items())))
                raise StageError(
                    f"{len(report.failed)} of {count} shards failed to download, e.g. {first}: "
                    f"{reason}; run again to retry them"
                )
            result.update(downloaded=len(report.fetched), present=len(report.skipped))
        ctx.runtime.barrier()  # the other ranks read the shards only once they are all there
        return result

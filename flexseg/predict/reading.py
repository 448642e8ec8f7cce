"""What prediction reads: the input images of `flexseg-infer`, and images read ahead of the
forward passes, a group at a time where the group's statistics normalise them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flexseg.data.pairing import list_images
from flexseg.data.reading import ReadSpec, convert_channels, intensity_stats, read_sample, to_unit
from flexseg.data.sources import Sample
from flexseg.errors import DataError


def read_ahead(read: Callable, items: Sequence, threads: int = 2, ahead: int = 16) -> Iterator:
    """`read(item)` for each item, in order, computed up to `ahead` items early in threads
    (decoding releases the interpreter lock), so reading overlaps the forward passes."""
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        futures = deque()
        for item in items:
            futures.append(pool.submit(read, item))
            if len(futures) > ahead:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()


def find_inputs(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files of a folder, a single image, a text file listing images, or a list."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
    else:
        source = Path(source)
        if source.is_dir():
            return list_images(source, "input")
        if source.suffix.lower() in (".txt", ".lst"):
            lines = source.read_text().splitlines()
            paths = [Path(line.strip()) for line in lines if line.strip()]
        else:
            paths = [source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"input image(s) not found: {', '.join(missing[:5])}")
    if not paths:
        raise DataError(f"no input images in {source}")
    return paths


def grouped_reads(
    members: Mapping[str, Sequence],
    read: Callable,
    spec: ReadSpec,
    image_of: Callable = lambda data: data,
    others: Mapping[str, Sequence[Sample]] | None = None,
) -> Iterator[tuple]:
    """(item, read(item), its group's intensity statistics or None) for every item.

    Each item is read once. With `group_zscore` the items of a group are read together and
    the statistics computed from their images (`image_of(data)`) and from the group's
    `others` (samples of the group that are not predicted); otherwise items stream.
    """
    if spec.normalize != "group_zscore":
        items = [item for group in members.values() for item in group]
        for item, data in zip(items, read_ahead(read, items), strict=True):
            yield item, data, None
        return
    for group, items in members.items():
        datas = list(read_ahead(read, items))
        images = [convert_channels(image_of(d), spec.channels) for d in datas]
        for sample in (others or {}).get(group, []):
            images.append(read_sample(sample, spec))
        stats = intensity_stats((to_unit(image)[0] for image in images), spec)
        for item, data in zip(items, datas, strict=True):
            yield item, data, stats

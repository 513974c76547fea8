"""Word-level language modelling on WikiText-2 (`Salesforce/wikitext`, `wikitext-2-raw-v1`, parquet on
the Hugging Face hub) through `datasets`. Needs the hub or a local copy (`path`: a folder of the
parquet files); offline without one it stops with a one-line error. Metric: bits per word."""

import torch

from tasks._data import offline
from tasks._lm import TokenLMTask
from suite.errors import DataError


class WikiText2(TokenLMTask):
    name = "wikitext2"
    description = "word-level language modelling on WikiText-2 via `datasets` (needs the hub or a local copy)"
    unit = "word"

    def __init__(self, seq_len: int = 64, eval_windows: int = 256, path: str | None = None, min_count: int = 3, seed: int = 0):
        super().__init__(seed)
        from datasets import load_dataset

        try:
            if path:
                ds = load_dataset("parquet", data_dir=path)
            elif offline():
                raise DataError("wikitext2 needs the Hugging Face hub, which is offline here; pass path=<folder of "
                                "wikitext-2-raw-v1 parquet files> or use char_lm")
            else:
                ds = load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1")
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"could not load WikiText-2 ({type(exc).__name__}); pass path=<folder of its parquet files>") from None
        words = [w for split in ("train", "validation", "test") for line in ds[split]["text"] for w in line.split() + ["<eos>"]]
        counts = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        self.vocab = ["<unk>"] + sorted(w for w, c in counts.items() if c >= min_count and w != "<unk>")
        lookup = {w: i for i, w in enumerate(self.vocab)}
        self.ids = torch.tensor([lookup.get(w, 0) for w in words], dtype=torch.long)
        self.source = f"WikiText-2 raw ({path or 'hub'})"
        self._setup(seq_len, eval_windows)

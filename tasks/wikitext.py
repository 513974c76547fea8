"""Word-level language modelling on WikiText-2 by the book (Merity et al. 2016; pytorch/examples'
word_language_model): the official train/validation/test splits of `Salesforce/wikitext` through
`datasets` (from the hub when LSTM_BENCH_ONLINE=1, from the local `datasets` cache, or from `path`,
a folder of its parquet files), each line split on whitespace plus an <eos> per line, the
vocabulary from the training split only (for -v1, whose rare words the dataset already replaced by
<unk>, that is the dataset's own vocabulary), words unseen in training mapped to <unk>, and the
metric over every token of the test split (eval_windows=0). Metric: bits per word;
perplexity = 2 ** bits per word = e ** loss."""

from collections import Counter
from pathlib import Path

import torch

from suite.errors import ConfigError, DataError
from tasks._data import load_hf_dataset
from tasks._lm import SPLITS, UNK, TokenLMTask

CONFIGS = ("wikitext-2-v1", "wikitext-2-raw-v1")
HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}
EOS = "<eos>"
HUB_NAMES = ("Salesforce/wikitext", "wikitext")  # the second: caches made before the dataset moved


def load(config: str, path: str | None, instead: str):
    if path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(f"WikiText-2 folder {folder} does not exist; {instead}")
        return load_hf_dataset(str(folder), None, instead)
    first: DataError | None = None
    for name in HUB_NAMES:
        try:
            return load_hf_dataset(name, config, instead)
        except DataError as exc:
            first = first or exc
    assert first is not None  # HUB_NAMES is not empty
    raise first


def words(lines) -> list[str]:
    """pytorch/examples' tokenisation: whitespace split, <eos> after every line (blank ones too)."""
    return [w for line in lines for w in line.split() + [EOS]]


def build(split_words: dict[str, list[str]], min_count: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Vocabulary of the training words seen at least min_count times, <unk> first; ids per split."""
    counts = Counter(split_words["train"])
    vocab = [UNK] + sorted(w for w, c in counts.items() if c >= min_count and w != UNK)
    lookup = {w: i for i, w in enumerate(vocab)}
    ids = {k: torch.tensor([lookup.get(w, 0) for w in ws], dtype=torch.long) for k, ws in split_words.items()}
    return ids, vocab


class WikiText2(TokenLMTask):
    name = "wikitext2"
    description = "word-level LM on WikiText-2's official splits via `datasets` (hub, local cache or path)"
    unit = "word"
    primary_metric = "bpw"  # bits per word (perplexity = 2 ** bpw)
    param_help = {
        "config": "wikitext-2-v1 (tokenised, rare words already <unk>: pytorch/examples' data) or "
        "wikitext-2-raw-v1",
        "path": "a folder of the config's train/validation/test parquet files, instead of the hub or cache",
        "min_count": "training words seen fewer times map to <unk> (1 keeps every training word)",
        "eval_windows": "evaluation windows of seq_len words per split; 0 (default) = the whole split",
    }

    def __init__(
        self,
        seq_len: int = 64,
        eval_windows: int = 0,
        path: str | None = None,
        min_count: int = 1,
        config: str = "wikitext-2-v1",
        seed: int = 0,
    ):
        super().__init__(seed)
        if config not in CONFIGS:
            raise ConfigError(f"wikitext2 config must be one of {', '.join(CONFIGS)}, got {config!r}")
        if not isinstance(min_count, int) or min_count < 1:
            raise ConfigError(f"wikitext2 min_count must be an integer >= 1, got {min_count!r}")
        instead = f"pass path=<folder of its {config} train/validation/test parquet files>, or use char_lm"
        ds = load(config, path, instead)
        missing = [s for s in HF_SPLIT.values() if s not in ds]
        if missing:
            raise DataError(
                f"WikiText-2 at {path or 'Salesforce/wikitext'} has no {', '.join(missing)} "
                f"split (it has {', '.join(ds)}); {instead}"
            )
        split_words = {k: words(ds[HF_SPLIT[k]]["text"]) for k in SPLITS}
        splits, vocab = build(split_words, min_count)
        self.config = config
        self.source = f"WikiText-2 {config} ({path or 'Salesforce/wikitext'}), official splits"
        self._setup(splits, vocab, seq_len, eval_windows)

    def describe(self):
        return {**super().describe(), "config": self.config}

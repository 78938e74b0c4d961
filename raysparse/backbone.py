"""Local backbones: a Korean+English tokenizer and a small BERT built from data, plus a masked-LM warm start.

No pretrained Korean model can be downloaded on the project's machines, so tests and the default job build one:

1. :func:`train_tokenizer` — WordPiece (or Unigram) with the ``tokenizers`` library. Normalisation is NFKC + lowercase
   *without* accent stripping: BERT's usual ``strip_accents`` decomposes text to NFD and drops combining marks, and
   NFD turns every Hangul syllable into conjoining jamo, so "검색" would no longer match "검색" from another tokenizer.
2. :func:`build_small_bert` — ``BertForMaskedLM`` from a :class:`~raysparse.config.ModelConfig`, input and output
   embeddings tied (the output layer is the encoder's vocabulary; tying halves its parameters and lets the lexical
   prior and the input embedding reinforce each other).
3. :func:`mlm_collate` / :func:`mlm_warm_start_step` / :func:`mlm_warm_start` — plain-torch masked-LM pieces a trainer
   can run in any process (Ray Train worker or a single one).

The saved directory is ordinary Hugging Face layout, so :meth:`raysparse.model.SparseEncoder.from_pretrained` loads
it exactly like ``klue/bert-base``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import transformers

    from raysparse.config import ModelConfig

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_KINDS = ("wordpiece", "unigram")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, kind: str = "wordpiece", min_frequency: int = 2
) -> transformers.PreTrainedTokenizerFast:
    """Train a BERT-style tokenizer on Korean + English text (NFKC, lowercase, Hangul kept intact).

    ``[PAD]`` is id 0 and ``[UNK] [CLS] [SEP] [MASK]`` follow, so models built from it have the usual BERT ids.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    if vocab_size < len(SPECIAL_TOKENS) + 10:
        raise ValueError(f"vocab_size {vocab_size} is too small")
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer: Any = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            continuing_subword_prefix="##",
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()]
        )
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]", show_progress=False
        )
    # NFKC folds full-width Latin/compatibility jamo; Lowercase leaves Hangul alone. No StripAccents (see module doc).
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    count = 0

    def counted() -> Iterable[str]:
        nonlocal count
        for text in texts:
            if text:
                count += 1
                yield text

    try:
        tok.train_from_iterator(counted(), trainer=trainer)
    except Exception as err:  # tokenizers raises a bare Exception
        if "not large enough" in str(err):
            raise ValueError(
                f"{kind} vocab_size {vocab_size} is smaller than the number of distinct characters in the texts; "
                "raise vocab_size or use kind='wordpiece'"
            ) from None
        raise
    if count == 0:
        raise ValueError("train_tokenizer got no non-empty texts")
    if kind == "wordpiece":
        # The trainer breaks frequency ties in hash order, so the same texts give the same pieces under different
        # ids from run to run (and an untrained model different weights per token). Re-number canonically: special
        # tokens first, then the pieces sorted. WordPiece matching only looks pieces up, so ids are free to choose.
        pieces = sorted(t for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
        vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *pieces])}
        tok.model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def build_small_bert(
    tokenizer: Any, model_cfg: ModelConfig, output_bias: float = -0.25
) -> transformers.BertForMaskedLM:
    """A randomly initialised ``BertForMaskedLM`` sized by ``model_cfg``, with tied input/output embeddings.

    ``output_bias`` initialises every vocabulary logit's bias (BERT uses 0). Why negative: with bias 0 a random
    model's logits are small noise around 0, so after ``max over positions`` *every* term is active in every text
    (measured: ~3,300 of 3,300 terms, weight ~0.3 each) and that noise drowns the lexical prior (top-1 of 60 Korean
    news sentences from their first 3 words: 0.48 with prior 5). A uniform -0.25 leaves ~870 near-threshold terms
    (which still get gradient, so expansions can be learned) and gives 0.98; -0.5 leaves ~45 (pure bag of words,
    0.97) but starves expansions of gradient. A uniform shift does not change the masked-LM softmax, so
    :func:`mlm_warm_start` restores the bias mean after training (Adam's per-coordinate steps make it drift:
    -0.25 -> -0.33 in 30 steps at lr 3e-3) without changing a single masked-LM prediction.
    """
    from transformers import BertConfig, BertForMaskedLM

    if model_cfg.hidden_size % model_cfg.num_heads:
        raise ValueError(
            f"model.hidden_size ({model_cfg.hidden_size}) must be divisible by model.num_heads ({model_cfg.num_heads})"
        )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        max_position_embeddings=max(512, model_cfg.max_doc_length, model_cfg.max_query_length),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = BertForMaskedLM(config)
    model.tie_weights()
    import torch

    with torch.no_grad():
        model.get_output_embeddings().bias.fill_(output_bias)
    return model


def build_local_backbone(
    texts: Sequence[str], model_cfg: ModelConfig, out_dir: str | Path, *, seed: int = 13
) -> str:
    """Train a tokenizer on ``texts``, build a small BERT, optionally warm it up with masked LM, save; return the dir.

    ``model_cfg.mlm_warmup_steps > 0`` runs :func:`mlm_warm_start` in this process before saving.
    """
    import torch

    from raysparse.encoding import pretokenize

    torch.manual_seed(seed)
    # the tokenizer learns pieces from the text as the encoder will see it (Kiwi morphemes when the spec says so)
    texts = pretokenize(list(texts), getattr(model_cfg, "pretokenize", "none"))
    tokenizer = train_tokenizer(texts, vocab_size=model_cfg.vocab_size)
    model = build_small_bert(tokenizer, model_cfg, output_bias=model_cfg.output_bias)
    losses: list[float] = []
    if model_cfg.mlm_warmup_steps > 0:
        losses = mlm_warm_start(
            model,
            tokenizer,
            texts,
            steps=model_cfg.mlm_warmup_steps,
            max_length=model_cfg.max_doc_length,
            seed=seed,
        )
    from raysparse.files import apply_umask

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    apply_umask(out)  # transformers writes model.safetensors 0600 (raysparse.files)
    (out / "backbone.json").write_text(
        json.dumps({"num_texts": len(texts), "mlm_steps": len(losses), "mlm_losses": losses}, indent=1) + "\n"
    )
    return str(out)


def sparse_model_backbone(backbone: str, query_mode: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The masked-LM directory to train from and the overrides a sentence-transformers / OpenSearch sparse model
    brings (:func:`raysparse.interop.read_sparse_model`): inference-free query weights from its ``idf.json`` (or its
    ``SparseStaticEmbedding`` weights). Any other backbone (HF directory or name, raysparse model): as given."""
    import logging

    from raysparse.interop import read_sparse_model

    layout = read_sparse_model(backbone)
    if layout is None:
        return backbone, {}, {}
    log = logging.getLogger(__name__)
    for note in layout.notes:
        log.warning("%s: %s", backbone, note)
    info: dict[str, Any] = {"backbone_layout": layout.kind, "backbone_mlm": str(layout.mlm_dir)}
    overrides: dict[str, Any] = {}
    if layout.query_weights is not None:
        if query_mode == "inference_free":
            overrides["query_weights"] = layout.query_weights
            info["query_weights_from"] = layout.query_weights_source
            info["idf_tokens_missing"] = layout.missing_idf_tokens  # they get 1.0, ml-commons' default
            info["idf_keys_unknown"] = layout.unknown_idf_tokens  # keys that are no token of the vocabulary
            if layout.missing_idf_tokens or layout.unknown_idf_tokens:
                log.warning(
                    "%s: %d vocabulary tokens have no weight (given 1.0), %d keys are no vocabulary token (skipped)",
                    layout.query_weights_source,
                    layout.missing_idf_tokens,
                    layout.unknown_idf_tokens,
                )
        else:
            log.warning(
                "%s: its inference-free query weights are not used (model.query_mode is %s)",
                backbone,
                query_mode,
            )
    log.info("backbone %s: %s layout, masked LM in %s", backbone, layout.kind, layout.mlm_dir)
    return str(layout.mlm_dir), overrides, info


def build_encoder(
    backbone: str,
    model_cfg: ModelConfig,
    out_dir: str | Path,
    *,
    background_texts: Sequence[str] = (),
    documents: Sequence[str] | None = None,
    sentence_pairs: Sequence[tuple[str, str]] = (),
    glossary_pairs: Sequence[tuple[str, str]] = (),
) -> tuple[str, dict[str, Any]]:
    """Attach the priors and the encoding spec of ``model_cfg`` to a masked-LM ``backbone``; save; return the dir.

    - the encoding spec (lengths, windows, pre-tokenisation, pruning) from ``model_cfg``;
    - ``lexical_weighting: bm25``: a :class:`~raysparse.model.LexicalPrior` fitted on ``background_texts`` (IDF)
      and ``documents`` (avgdl), with function-morpheme pieces masked when pre-tokenising with Kiwi;
    - ``translation_prior > 0``: a Korean<->English piece translation table (:mod:`raysparse.alignment`) learned
      from ``sentence_pairs`` and ``glossary_pairs``, pre-tokenised like the encoder's input;
    - ``lexical_weighting: logit``: ``lexical_prior`` on each token's own logit instead.
    Works the same for the local backbone, HF models (klue/bert-base, xlm-roberta-base) and sentence-transformers /
    OpenSearch sparse model directories (:func:`sparse_model_backbone`: their masked LM, and their ``idf.json`` as
    inference-free query weights).
    ``model_cfg.kind == "dense"``: no priors; a :class:`raysparse.dense.DenseEncoder` over the same backbone.
    """
    if getattr(model_cfg, "kind", "sparse") == "dense":
        from raysparse.dense import build_dense_encoder

        return build_dense_encoder(backbone, model_cfg, out_dir)
    from raysparse.encoding import kiwi_segment_with_tags, pretokenize, spec_from_model_config
    from raysparse.model import SparseEncoder, fit_lexical_prior

    spec = spec_from_model_config(model_cfg)
    bm25 = model_cfg.lexical_weighting == "bm25"
    mlm_dir, layout_overrides, layout_info = sparse_model_backbone(backbone, model_cfg.query_mode)
    encoder = SparseEncoder.from_pretrained(
        mlm_dir,
        lexical_prior=model_cfg.lexical_prior,
        query_mode=model_cfg.query_mode,
        spec=spec,
        neural_weight=model_cfg.neural_weight,
        translation_side=model_cfg.translation_side,
        **layout_overrides,
    )
    info: dict[str, Any] = {"encoding": spec.to_dict(), "lexical_weighting": model_cfg.lexical_weighting}
    info.update(layout_info)
    if bm25:
        texts = list(background_texts) or list(documents or [])
        if not texts:
            raise ValueError("lexical_weighting=bm25 needs background texts or documents to fit IDF/avgdl on")
        function_counts = content_counts = None
        if spec.pretokenize == "kiwi":
            texts, content_counts, function_counts = kiwi_segment_with_tags(texts)
        docs = None if documents is None else pretokenize(list(documents), spec.pretokenize)
        encoder.lexical = None
        lexical = fit_lexical_prior(
            encoder.tokenizer,
            texts,
            documents=docs,
            function_counts=function_counts,
            content_counts=content_counts,
            k1=model_cfg.lexical_k1,
            b=model_cfg.lexical_b,
            vocab_size=encoder.vocab_size,
        )
        encoder.lexical = lexical
        info.update(
            {
                "lexical_texts": len(texts),
                "lexical_avgdl": round(lexical.avgdl, 2),
                "lexical_pieces": int(lexical.piece_mask.sum()),
            }
        )
    if model_cfg.translation_prior > 0 and (sentence_pairs or glossary_pairs):
        from raysparse.alignment import describe, learn_translation_table

        pairs = list(sentence_pairs)
        terms = list(glossary_pairs)
        if spec.pretokenize != "none":  # both sides, exactly as the encoder will see them
            flat = pretokenize([x for pair in (*pairs, *terms) for x in pair], spec.pretokenize)
            both = list(zip(flat[0::2], flat[1::2], strict=True))
            pairs, terms = both[: len(pairs)], both[len(pairs) :]
        table = learn_translation_table(
            encoder.tokenizer,
            pairs,
            terms,
            top_k=model_cfg.translation_top_k,
            min_score=model_cfg.translation_min_score,
        )
        rebuilt = SparseEncoder(
            encoder.mlm,
            encoder.tokenizer,
            lexical_prior=encoder.lexical_prior,
            query_mode=encoder.query_mode,
            query_weights=encoder.query_weights,
            translation_prior=model_cfg.translation_prior,
            translation_table=table,
            lexical=encoder.lexical,
            neural_weight=encoder.neural_weight,
            translation_side=encoder.translation_side,
            spec=spec,
        )
        encoder = rebuilt
        examples = describe(table, encoder.tokenizer, ["검색", "모델", "search", "model", "학교", "school"])
        info.update({"translation_entries": table.num_entries, "translation_examples": examples})
    encoder.translation_prior = model_cfg.translation_prior if encoder.translation_ids is not None else 0.0
    out = Path(out_dir)
    encoder.save_pretrained(out)
    return str(out), info


def mlm_collate(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 128,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize and mask a batch for masked LM (BERT's 80% [MASK] / 10% random / 10% unchanged).

    Special and padding positions are never selected; unselected positions get label -100 (ignored by the loss).
    At least one position per batch is selected so the loss is always defined.
    """
    import torch

    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    input_ids = enc["input_ids"].clone()
    attention_mask = enc["attention_mask"]
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for sid in tokenizer.all_special_ids:
        special |= input_ids == sid
    candidates = attention_mask.bool() & ~special
    probs = torch.full(input_ids.shape, mlm_probability)
    selected = (torch.rand(input_ids.shape, generator=generator) < probs) & candidates
    if not selected.any() and candidates.any():
        first = candidates.nonzero()[0]
        selected[first[0], first[1]] = True
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    input_ids[to_mask] = tokenizer.mask_token_id
    random_ids = torch.randint(len(tokenizer), input_ids.shape, generator=generator)
    input_ids[to_random] = random_ids[to_random]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def mlm_warm_start_step(
    model: Any, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0
) -> float:
    """One masked-LM optimisation step on a collated batch; returns the loss value."""
    import torch

    model.train()
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    loss = model(**batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def mlm_warm_start(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    max_length: int = 128,
    mlm_probability: float = 0.15,
    seed: int = 13,
) -> list[float]:
    """Single-process masked-LM warm start (AdamW); returns the loss of every step.

    Batches are drawn by reshuffling ``texts`` each epoch, so ``steps`` may exceed one pass.
    """
    import torch
    from tqdm.auto import tqdm

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("mlm_warm_start got no non-empty texts")
    if steps <= 0:
        return []
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    bias = getattr(out_layer, "bias", None)
    bias_mean = float(bias.detach().mean()) if bias is not None else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    order: list[int] = []
    losses: list[float] = []
    for _ in tqdm(range(steps), desc="mlm warm start", disable=steps < 20, leave=False):
        if len(order) < batch_size:
            extra = list(range(len(texts)))
            rng.shuffle(extra)
            order.extend(extra)
        idx, order = order[:batch_size], order[batch_size:]
        batch = mlm_collate(tokenizer, [texts[i] for i in idx], max_length, mlm_probability, gen)
        losses.append(mlm_warm_start_step(model, batch, optimizer))
    if bias is not None and bias_mean is not None:
        # softmax is shift-invariant: re-centring the output bias keeps every MLM prediction and the encoder's
        # sparsity offset (see build_small_bert)
        with torch.no_grad():
            bias.add_(bias_mean - bias.mean())
    model.eval()
    return losses


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def backbone_texts_from_shared(shared_dir: str | Path, max_per_source: int | None = None) -> list[str]:
    """Korean + English text from ../shared/data for tokenizer/backbone training (tests, the default job).

    Sources: Tatoeba (both sides), news-parallel-dev (both sides), KLUE-MRC ODQA (questions and passages) and the
    MS MARCO ko/en dev queries with their positives. Missing files are an error naming the file (a silently smaller
    corpus would change the tokenizer without anyone noticing).
    """
    root = Path(shared_dir)
    texts: list[str] = []

    def add(items: Iterable[str]) -> None:
        items = [t for t in items if t]
        texts.extend(items[:max_per_source] if max_per_source else items)

    tatoeba = root / "bilingual" / "tatoeba" / "kor.txt"
    en_side, ko_side = [], []
    for lineno, line in enumerate(tatoeba.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{tatoeba}:{lineno}: expected tab-separated English and Korean, got {line!r}")
        en_side.append(parts[0].strip())
        ko_side.append(parts[1].strip())
    add(ko_side)
    add(en_side)
    news = root / "bilingual" / "news-parallel-dev"
    for name in ("korean-english-park.dev.ko", "korean-english-park.dev.en"):
        add(_read_lines(news / name))
    klue = root / "klue-mrc-odqa" / "validation.jsonl"
    questions, contexts = [], []
    for lineno, line in enumerate(klue.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            questions.append(str(rec["question"]))
            contexts.append(str(rec["context"]))
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{klue}:{lineno}: bad record ({err})") from None
    add(questions)
    add(list(dict.fromkeys(contexts)))
    for lang in ("kor", "eng"):
        path = root / "msmarco-ko-en" / f"msmarco_{lang}.dev1000.json"
        records = json.loads(path.read_text(encoding="utf-8"))
        queries, passages = [], []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or "query" not in rec:
                raise ValueError(f"{path}: record {i} has no 'query' field")
            queries.append(str(rec["query"]))
            passages.extend(str(p) for p in rec.get("positive", []))
        add(queries)
        add(passages)
    return texts

"""The bi-encoder (dense encoder, bootstrap teacher) against sentence-transformers on the real pretrained MiniLM."""
import pytest
import torch

from pipeline.retrieval.biencoder import BiEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_biencoder_matches_sentence_transformers(minilm_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["what is a volcano", "A volcano is a rupture in the crust of a planet.", "Pianos have 88 keys."]
    ours = BiEncoder(minilm_path, device="cpu").embed(texts)
    reference = sentence_transformers.SentenceTransformer(str(minilm_path), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(ours, reference.float(), atol=1e-4, rtol=1e-4)
    cos = ours @ ours[0]
    assert cos[1] > cos[2]  # the volcano passage is closer to the volcano query


def test_biencoder_scores_candidate_lists(minilm_path):
    passages = {"a": "volcano lava eruption", "b": "piano keys music"}

    class Store:
        def get_many(self, ids):
            return [passages[i] for i in ids]

    store = Store()
    encoder = BiEncoder(minilm_path, device="cpu")
    (qid, scored), = list(encoder.score_lists([("q", [("b", 1.0), ("a", 0.5)])], {"q": "what is a volcano"}, store))
    assert qid == "q" and [d for d, _ in scored] == ["b", "a"] and scored[1][1] > scored[0][1]


def test_biencoder_is_a_ranker_like_the_cross_encoder_stage(minilm_path):
    from pipeline.eval.timing import StageTiming
    from pipeline.io.runs import Run
    from pipeline.rerank.ranker import Ranker

    passages = {"a": "volcano lava eruption", "b": "piano keys music", "c": "a glacier of ice"}

    class Store:
        def get_many(self, ids):
            return [passages[i] for i in ids]

        def missing(self, ids):
            return [i for i in ids if i not in passages]

    encoder = BiEncoder(minilm_path, device="cpu")
    assert isinstance(encoder, Ranker)
    first = Run({"q": [("b", 3.0), ("a", 2.0), ("c", 1.0)]})
    run, timing = encoder.rerank(first, {"q": "what is a volcano"}, Store(), depth=2)
    assert isinstance(run, Run) and isinstance(timing, StageTiming)
    assert [d for d, _ in run["q"]] == ["a", "b", "c"]  # the head by cosine, the tail kept below it
    assert timing.queries == 1 and timing.pairs == 2 and timing.wall_s > 0

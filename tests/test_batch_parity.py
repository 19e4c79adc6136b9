"""A batch made through the nodes equals diffusers' pipelines with num_images_per_prompt (and prompt lists) and
``generator=torch.Generator().manual_seed(seed)``, stage by stage (fp32, CPU, the demo checkpoints)."""

import pytest
import torch

from core.sampling import image_seeds
from pack import NODES, write_demo_models
from tiny import TINY_DECODER, TINY_PRIOR

PROMPTS = ["a horse", "the cat sat on the mat"]
WIDTH, HEIGHT = 256, 384
PRIOR_SEED, DECODER_SEED = 11, 4


def node_call(node_id, *args, **kwargs):
    node = NODES[node_id]()
    return getattr(node, node.FUNCTION)(*args, **kwargs)[0]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WUERSTCHEN_MODEL_DIRS", str(root))
        return dict(prior=node_call("WuerstchenPriorLoader", "wuerstchen-prior", "fp32"),
                    decoder=node_call("WuerstchenDecoderLoader", "wuerstchen", "fp32"),
                    vqgan=node_call("WuerstchenVQGANLoader", "wuerstchen", "fp32"),
                    prior_te=node_call("WuerstchenTextEncoderLoader", "wuerstchen-prior", "fp32"),
                    decoder_te=node_call("WuerstchenTextEncoderLoader", "wuerstchen", "fp32"))


def reference_twin(cls, config, ours):
    model = cls(**config)
    model.load_state_dict(ours.module.state_dict(), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def pipelines(stages):
    """diffusers' prior and decoder pipelines with the very weights and tokenizers the loader nodes loaded."""
    from diffusers import DDPMWuerstchenScheduler, WuerstchenDecoderPipeline, WuerstchenPriorPipeline
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior
    from tiny import TINY_VQGAN
    prior_te, decoder_te = stages["prior_te"].handle, stages["decoder_te"].handle
    prior_pipe = WuerstchenPriorPipeline(tokenizer=prior_te.tokenizer, text_encoder=prior_te.model,
                                         prior=reference_twin(WuerstchenPrior, TINY_PRIOR, stages["prior"]),
                                         scheduler=DDPMWuerstchenScheduler())
    decoder_pipe = WuerstchenDecoderPipeline(
        tokenizer=decoder_te.tokenizer, text_encoder=decoder_te.model,
        decoder=reference_twin(WuerstchenDiffNeXt, TINY_DECODER, stages["decoder"]),
        vqgan=reference_twin(PaellaVQModel, TINY_VQGAN, stages["vqgan"]), scheduler=DDPMWuerstchenScheduler())
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
    return prior_pipe, decoder_pipe


def with_prompt_rows_per_image(decoder_pipe, prompts: int):
    """diffusers' decoder repeats each of P prompts once per image (P²·n text rows, its batch bug (b)); repeat each
    prompt once per image of its own, [p0, p0, …, p1, p1, …], the order its prior pipeline gives the images."""
    encode = type(decoder_pipe).encode_prompt

    def encode_prompt(self, prompt, device, num_images, *args, **kwargs):
        return encode(self, prompt, device, num_images // prompts, *args, **kwargs)

    return encode_prompt.__get__(decoder_pipe)


def encode(text_encoder, prompts):
    """What Conditioning Combine of one Würstchen Text Encode per prompt gives: the entries one after another."""
    return [entry for text in prompts for entry in node_call("WuerstchenTextEncode", text_encoder, text)]


@torch.no_grad()
@pytest.mark.parametrize("batch,prompts,decoder_cfg", [(2, 1, 0.0), (3, 1, 2.0), (2, 2, 2.0), (3, 2, 0.0)])
def test_node_batch_equals_diffusers_images_per_prompt(stages, pipelines, monkeypatch, batch, prompts, decoder_cfg):
    prior_pipe, decoder_pipe = pipelines
    texts = PROMPTS[:prompts]
    prompt = texts[0] if prompts == 1 else texts
    expected_embeddings = prior_pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=3, guidance_scale=4.0,
                                     num_images_per_prompt=batch, generator=torch.Generator().manual_seed(PRIOR_SEED),
                                     output_type="pt").image_embeddings
    if prompts > 1:
        monkeypatch.setattr(decoder_pipe, "encode_prompt", with_prompt_rows_per_image(decoder_pipe, prompts))
    expected = decoder_pipe(expected_embeddings, prompt=prompt, num_inference_steps=2, guidance_scale=decoder_cfg,
                            generator=torch.Generator().manual_seed(DECODER_SEED), output_type="pt").images

    empty_prior, empty_decoder = encode(stages["prior_te"], [""]), encode(stages["decoder_te"], [""])
    stage_c = node_call("WuerstchenPriorSampler", stages["prior"], encode(stages["prior_te"], texts), empty_prior,
                        seed=PRIOR_SEED, steps=3, schedule="linear", cfg=4.0, width=WIDTH, height=HEIGHT,
                        batch_size=batch)
    embeddings = stage_c["samples"]
    assert embeddings.shape == expected_embeddings.shape == (prompts * batch, 16, 9, 6)
    assert (embeddings - expected_embeddings).abs().max() < 1e-5 * expected_embeddings.abs().max()
    stage_b = node_call("WuerstchenDecoderSampler", stages["decoder"], encode(stages["decoder_te"], texts), stage_c,
                        seed=DECODER_SEED, steps=2, cfg=decoder_cfg, negative=empty_decoder)
    images = node_call("WuerstchenVQDecode", stages["vqgan"], stage_b).permute(0, 3, 1, 2)
    assert images.shape == expected.shape == (prompts * batch, 3, HEIGHT, WIDTH)
    assert expected.std() > 0.01  # a non-degenerate image, so the comparison means something
    assert (images - expected).abs().max() < 1e-4
    assert (images[0] - images[1]).abs().max() > 0.01  # the images of a batch differ


@torch.no_grad()
def test_per_image_seeds_remake_image_i_alone_and_the_default_does_not(stages):
    cond, empty = encode(stages["prior_te"], PROMPTS[:1]), encode(stages["prior_te"], [""])

    def prior(seed, batch, per_image_seeds):
        return node_call("WuerstchenPriorSampler", stages["prior"], cond, empty, seed=seed, steps=2,
                         schedule="linear", cfg=4.0, width=256, height=256, batch_size=batch,
                         per_image_seeds=per_image_seeds)

    alone = prior(image_seeds(5, 3)[2], 1, False)["samples"]  # image 2's seed, as the node shows it
    scale = alone.abs().max()
    assert (prior(5, 3, True)["samples"][2:] - alone).abs().max() < 1e-5 * scale
    assert (prior(5, 3, False)["samples"][2:] - alone).abs().max() > 1e-2 * scale
    assert torch.equal(prior(image_seeds(5, 3)[2], 1, True)["samples"], alone)  # batch 1: both rules agree

    def decoder(seed, per_image_seeds, stage_c):
        return node_call("WuerstchenDecoderSampler", stages["decoder"], encode(stages["decoder_te"], PROMPTS[:1]),
                         stage_c, seed=seed, steps=2, cfg=0.0, per_image_seeds=per_image_seeds)["samples"]

    batch_c = prior(5, 2, True)
    second_c = dict(batch_c, samples=batch_c["samples"][1:])
    second_alone = decoder(image_seeds(8, 2)[1], False, second_c)
    assert torch.allclose(decoder(8, True, batch_c)[1:], second_alone, atol=1e-5)
    assert not torch.allclose(decoder(8, False, batch_c)[1:], second_alone, atol=1e-3)

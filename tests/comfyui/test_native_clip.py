"""The Würstchen text encoders as ComfyUI CLIP (nodes/native/clip.py): stock CLIPTextEncode gives diffusers'
pipelines' prompt embeddings and negatives, emphasis agrees with the pack's encoder, long prompts are cut to 77
tokens as the reference does (with a warning), and the stock LoraLoader applies a prior + text-encoder LoRA as
diffusers' load_lora_weights + fuse_lora does, in every naming family. Tiny random encoders; diffusers is the oracle.
"""

import logging

import pytest
import torch

from comfy_in_process import comfyui, native_module
from diffusers_lora import fused_prior_pipeline, save_prior_lora, te_modules
from test_native_lora import RANK, STRENGTH, layer_operations, patched_output

FOLDERS = {"prior": "wuerstchen-prior", "decoder": "wuerstchen"}
PIPELINES = {"prior": "WuerstchenPriorPipeline", "decoder": "WuerstchenDecoderPipeline"}
PROMPTS = ["a horse", "the horse rs ho", ""]
# (No punctuation: the tiny vocabulary has none, so it would become the unknown token, which is the end token.)
WEIGHTED = {"a (horse:1.3) the": "a horse the", "((the)) horse": "the horse", "(the horse:0.6) rs": "the horse rs"}
LONG = "the horse " * 45 + "zebra"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pack = comfyui()
    import folder_paths
    from demo_checkpoints import DECODER_TEXT_WIDTH, PRIOR_TEXT_WIDTH, write_model_index, write_text_encoder
    root = tmp_path_factory.mktemp("clip_models")
    for stage, width, seed in (("prior", PRIOR_TEXT_WIDTH, 1), ("decoder", DECODER_TEXT_WIDTH, 2)):
        write_text_encoder(root / FOLDERS[stage], width, seed)
        write_model_index(root / FOLDERS[stage], PIPELINES[stage], {})
    # The decoder's tokenizer pads with a token other than its end token (as SD 2's pads with "!"), so the test sees
    # that the tokenizer's own pad token is used.
    pad_with(root / FOLDERS["decoder"] / "tokenizer", "a")
    clip = native_module(pack, "clip")
    with pytest.MonkeyPatch.context() as patch:
        extensions = set(folder_paths.supported_pt_extensions)
        patch.setitem(folder_paths.folder_names_and_paths, "wuerstchen", ([str(root)], extensions))
        patch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(root / "loras")], extensions))
        clips = {stage: clip.load_clip(root / folder, "fp32", stage) for stage, folder in FOLDERS.items()}
        yield dict(pack=pack, root=root, clip=clip, clips=clips, pipes=reference_pipelines(root))


def pad_with(tokenizer_dir, token: str) -> None:
    from transformers import CLIPTokenizerFast
    CLIPTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True, pad_token=token).save_pretrained(
        tokenizer_dir)


def reference_parts(folder):
    from transformers import CLIPTextModel, CLIPTokenizerFast
    return (CLIPTokenizerFast.from_pretrained(folder / "tokenizer", local_files_only=True),
            CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval())


def reference_pipelines(root) -> dict:
    """diffusers' prior and decoder pipelines around the two encoders (their prompt encoding is all they run)."""
    from diffusers import DDPMWuerstchenScheduler, WuerstchenDecoderPipeline, WuerstchenPriorPipeline
    tokenizer, text_encoder = reference_parts(root / FOLDERS["prior"])
    prior = WuerstchenPriorPipeline(tokenizer=tokenizer, text_encoder=text_encoder, prior=None,
                                    scheduler=DDPMWuerstchenScheduler())
    tokenizer, text_encoder = reference_parts(root / FOLDERS["decoder"])
    decoder = WuerstchenDecoderPipeline(tokenizer=tokenizer, text_encoder=text_encoder, decoder=None,
                                        scheduler=DDPMWuerstchenScheduler(), vqgan=None)
    return {"prior": prior, "decoder": decoder}


@torch.no_grad()
def reference_embeddings(pipe, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings, the unconditional embeddings for negative_prompt "") as the pipeline computes them."""
    if hasattr(pipe, "prior"):
        return pipe.encode_prompt("cpu", 1, True, prompt, "")[:2]
    return pipe.encode_prompt(prompt, "cpu", 1, True, "")


@torch.no_grad()
def text_encode(clip, text: str) -> list:
    import nodes
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def states(conditioning: list) -> torch.Tensor:
    assert len(conditioning) == 1  # one entry: no extra 77-token windows
    return conditioning[0][0]


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert (got - want).abs().max() <= TOLERANCE


@pytest.mark.parametrize("stage", FOLDERS)
def test_clip_text_encode_gives_the_reference_conditioning(env, stage):
    clip, pipe = env["clips"][stage], env["pipes"][stage]
    width = pipe.text_encoder.config.hidden_size
    for prompt in PROMPTS:
        reference = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True)
        assert [token for token, _ in clip.tokenize(prompt)[clip.cond_stage_model.clip_name][0]] == reference.input_ids
        positive, negative = reference_embeddings(pipe, prompt)
        conditioning = text_encode(clip, prompt)
        assert conditioning[0][1]["wuerstchen_text_width"] == width
        assert_close(states(conditioning), positive)
        assert_close(states(text_encode(clip, "")), negative)  # the empty prompt is the reference's negative
    ids = torch.tensor(pipe.tokenizer(PROMPTS[0], padding="max_length", max_length=77).input_ids)[None]
    unmasked = pipe.text_encoder(ids).last_hidden_state
    assert (unmasked - reference_embeddings(pipe, PROMPTS[0])[0]).abs().max() > 1e-3  # the mask matters here


@pytest.mark.parametrize("text,problem", [("(" * 10_000 + "horse" + ")" * 10_000, "nest"),
                                          ("a (horse:1e308)", "weight"), ("a \ud800 horse", "lone surrogate")])
def test_clip_text_encode_refuses_what_it_cannot_encode_in_one_line(env, text, problem):
    """ComfyUI's own emphasis parser recurses once per bracket (10,000 overflow the stack) and a lone surrogate stops
    its tokenizer with a type error: CLIPTextEncode on a Würstchen CLIP says what is wrong with the text instead."""
    with pytest.raises(ValueError) as error:
        text_encode(env["clips"]["prior"], text)
    message = str(error.value)
    assert message.startswith("text") and problem in message and "\n" not in message and len(message) <= 300, message


@pytest.mark.parametrize("stage", FOLDERS)
def test_emphasis_agrees_with_the_pack_encoder(env, stage):
    """ComfyUI's weighting (CLIPTextEncode) against core.prompt_weights on the pack's transformers encoder."""
    from core import load_text_encoder
    clip, encoder = env["clips"][stage], load_text_encoder(env["root"] / FOLDERS[stage])
    for prompt, plain in WEIGHTED.items():
        got = states(text_encode(clip, prompt))
        assert_close(got, encoder.encode(prompt))
        assert (got - encoder.encode(plain)).abs().max() > 1e-3  # the weights changed something
    # ComfyUI has no [word] (÷1.1) syntax, the pack has: CLIPTextEncode differs there, the pack's text nodes (also
    # inside ComfyUI, on a CLIP) keep the pack's meaning, so saved workflows keep their conditioning.
    bracketed = "[the] horse ((in:1.3) [a [field]])"
    assert (states(text_encode(clip, bracketed)) - encoder.encode(bracketed)).abs().max() > 1e-3
    encode_with_clip = env["clip"].encode_with_clip
    for prompt in (bracketed, *WEIGHTED):
        assert_close(states(encode_with_clip(clip, prompt)), encoder.encode(prompt))


@pytest.mark.parametrize("stage", FOLDERS)
def test_a_long_prompt_is_cut_to_77_tokens_with_a_warning(env, stage, caplog):
    from core import load_text_encoder
    clip, pipe = env["clips"][stage], env["pipes"][stage]
    with caplog.at_level(logging.WARNING):
        conditioning = text_encode(clip, LONG)
    assert_close(states(conditioning), reference_embeddings(pipe, LONG)[0])
    tokens = len(pipe.tokenizer(LONG).input_ids)
    warnings = [record.getMessage() for record in caplog.records if "too long for CLIP" in record.getMessage()]
    assert len(warnings) == 1 and f"({tokens} tokens, limit 77): {tokens - 77} tokens were dropped" in warnings[0]
    assert "starting with 'horse the horse" in warnings[0]  # token 76 on, as the reference drops them
    encoder, pack_notes, notes = load_text_encoder(env["root"] / FOLDERS[stage]), [], []
    weighted = "(the horse:1.2) " * 40
    assert_close(states(text_encode(clip, weighted)), encoder.encode(weighted, report=pack_notes.append))
    clip.tokenize(weighted, report=notes.append)
    assert notes == pack_notes and len(notes) == 1


def engine_text_encoder(pack, folder):
    """The pack's own text encoder: core's transformers encoder in an EngineModel, as its loaders give it outside
    ComfyUI (inside, they give a CLIP), in fp32 on the CPU."""
    import importlib
    encoder = importlib.import_module(f"{pack.__name__}.core").load_text_encoder(folder, dtype=torch.float32)
    return pack.nodes.comfy_bridge.engine_model("text_encoder", encoder.model, "cpu", torch.float32, handle=encoder)


@pytest.mark.parametrize("stage", FOLDERS)
def test_encode_with_clip_gives_what_the_pack_text_node_gives(env, stage):
    """The function the pack's Text Encode nodes call with a CLIP, against their encode_text on the pack's own
    (engine) text encoder."""
    pack, clip = env["pack"], env["clips"][stage]
    engine = engine_text_encoder(pack, env["root"] / FOLDERS[stage])
    for prompt in [PROMPTS[0], next(iter(WEIGHTED)), LONG]:
        pack_notes, notes = [], []
        want = pack.nodes.text.encode_text(engine, prompt, "", pack_notes)
        got = env["clip"].encode_with_clip(clip, prompt, report=notes.append)
        assert len(got) == len(want) == 1 and got[0][1] == want[0][1] and notes == pack_notes
        assert_close(got[0][0], want[0][0])
        # the pack's samplers read CLIPTextEncode's output as they read their own
        stock = pack.nodes.wiring.conditioning_states(text_encode(clip, prompt), "positive")
        assert torch.equal(stock, got[0][0])
    with pytest.raises(ValueError, match="^clip: expected a Würstchen v2 CLIP"):
        env["clip"].encode_with_clip(None, "a horse")


def clip_nodes_module(pack):
    import importlib
    return importlib.import_module(f"{pack.__name__}.nodes.clip_nodes")


def test_loader_node_lists_loads_and_names_the_stage(env, monkeypatch):
    import comfy.model_management
    clip_nodes = clip_nodes_module(env["pack"])
    loader = clip_nodes.WuerstchenCLIPLoader
    assert set(FOLDERS.values()) <= set(loader.INPUT_TYPES()["required"]["clip_name"][0])
    shown = []
    monkeypatch.setattr(clip_nodes, "show_text", shown.append)
    clip = loader().load(FOLDERS["prior"], "auto")[0]
    # "auto" is the pack's text-encoder rule, as for its own encoder: fp32 on the CPU, so CPU runs stay exact.
    auto = env["pack"].nodes.comfy_bridge.placement("text_encoder", "auto")[2]
    if comfy.model_management.is_device_cpu(comfy.model_management.text_encoder_device()):
        assert auto == torch.float32
    assert clip.cond_stage_model.clip_g.transformer.text_model.final_layer_norm.weight.dtype == auto
    assert shown == ["48-wide text encoder: not a released Würstchen v2 one (prior 1280, decoder 1024)"]
    with pytest.raises(Exception) as error:
        loader().load(f"{FOLDERS['prior']}/tokenizer", "fp32")
    assert "\n" not in str(error.value) and "text_encoder" in str(error.value)


def write_encoder(root, name: str, model) -> str:
    """A pipeline folder ``name`` around the transformers ``model`` and the tiny tokenizer."""
    from demo_checkpoints import legacy_state_dict, write_model_index, write_tiny_tokenizer
    from safetensors.torch import save_file
    folder = root / name
    (folder / "text_encoder").mkdir(parents=True)
    model.config.to_json_file(folder / "text_encoder" / "config.json")
    save_file(legacy_state_dict(model), folder / "text_encoder" / "model.safetensors")
    write_tiny_tokenizer(folder / "tokenizer")
    write_model_index(folder, PIPELINES["decoder"], {})
    return name


def test_a_released_width_names_the_stage_and_refuses_the_other(env, monkeypatch):
    """A 1024-wide encoder is CLIP-ViT-H, the decoder's: ComfyUI's key maps see it as clip_h; the prior refuses it."""
    import comfy.lora
    from demo_checkpoints import tiny_text_model
    name = write_encoder(env["root"], "vit-h-sized", tiny_text_model(1024, seed=3, num_hidden_layers=1))
    clip_nodes = clip_nodes_module(env["pack"])
    shown = []
    monkeypatch.setattr(clip_nodes, "show_text", shown.append)
    clip = clip_nodes.WuerstchenCLIPLoader().load(name, "fp32")[0]
    assert shown == ["CLIP-ViT-H (1024 wide): for the decoder sampler"]
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    assert key_map["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"].startswith("clip_h.transformer.")
    with pytest.raises(ValueError, match="^text encoder: this 1024-wide encoder is the decoder's; the prior needs"):
        env["pack"].nodes.loaders.load_component("text_encoder", name, "fp32", "prior")


@pytest.mark.parametrize("change, problem", [({"hidden_act": "relu"}, "hidden_act 'relu'"),
                                             ({"max_position_embeddings": 64}, "max_position_embeddings 64")])
def test_an_encoder_comfyui_cannot_run_is_refused_in_one_line(env, change, problem):
    """transformers builds these, ComfyUI's CLIP model cannot; inside ComfyUI every text encoder loader (the CLIP
    Loader, the deprecated Text Encoder Loader) gives that CLIP, so each refuses them in one line."""
    from demo_checkpoints import tiny_text_model
    name = write_encoder(env["root"], f"odd-{problem.split()[0]}", tiny_text_model(48, seed=4, **change))
    nodes = env["pack"].nodes.NODE_CLASS_MAPPINGS
    for loader in (nodes["WuerstchenCLIPLoader"](), nodes["WuerstchenTextEncoderLoader"]()):
        with pytest.raises(ValueError) as raised:
            loader.load(name, "fp32")
        message = str(raised.value)
        assert message.startswith(f"text_encoder/config.json: ComfyUI's CLIP cannot run {problem}"), message
        assert message.endswith("; the released Würstchen v2 text encoders all run") and "\n" not in message


# --- LoRA ----------------------------------------------------------------------------------------------------------

def te_lora_names(form: str, module: str) -> tuple[str, str, str | None]:
    """(down, up, alpha) key of one text-encoder module in a LoRA naming family."""
    kohya = f"text_model_{module.replace('.', '_')}"
    return {
        "peft": (f"text_encoder.{module}.lora_A.weight", f"text_encoder.{module}.lora_B.weight", None),
        "peft_transformers4": (f"text_encoder.text_model.{module}.lora_A.weight",
                               f"text_encoder.text_model.{module}.lora_B.weight", None),
        "kohya": (f"lora_te_{kohya}.lora_down.weight", f"lora_te_{kohya}.lora_up.weight", f"lora_te_{kohya}.alpha"),
        "onetrainer": (f"lora_prior_te_{kohya}.lora_down.weight", f"lora_prior_te_{kohya}.lora_up.weight",
                       f"lora_prior_te_{kohya}.alpha"),
    }[form]


@pytest.fixture(scope="module")
def lora_env(env):
    """A prior MODEL + the prior CLIP, a LoRA for both saved by diffusers' own save_lora_weights, and what diffusers
    gives after load_lora_weights + fuse_lora(components=["prior", "text_encoder"])."""
    from safetensors.torch import load_file

    from core import StageCPrior
    from tiny import TINY_PRIOR, reference_models
    pack, root = env["pack"], env["root"]
    reference_prior = reference_models(seed=3)[0]
    network = StageCPrior(**TINY_PRIOR, operations=layer_operations(pack))
    network.load_state_dict(reference_prior.state_dict())
    cpu = torch.device("cpu")
    model = native_module(pack, "loading").wrap_network("prior", network.eval(), cpu, cpu, torch.float32, torch.float32)
    tokenizer, text_encoder = reference_parts(root / FOLDERS["prior"])
    generator = torch.Generator().manual_seed(7)
    saved = save_prior_lora(root / "loras", reference_prior, text_encoder, generator, RANK)
    pipe = fused_prior_pipeline(tokenizer, text_encoder, reference_prior, saved, STRENGTH)
    inputs = (torch.randn(2, 16, 4, 6, generator=generator), torch.tensor([0.7, 0.3]),
              torch.randn(2, 77, TINY_PRIOR["c_cond"], generator=generator))
    with torch.no_grad():
        fused_prior = pipe.prior(*inputs)
        assert (fused_prior - reference_prior(*inputs)).abs().max() > 1e-3  # the LoRA took effect on the prior
    return dict(model=model, saved=load_file(saved), modules=te_modules(text_encoder), inputs=inputs,
                fused_prior=fused_prior, fused_text=reference_embeddings(pipe, PROMPTS[1])[0])


def lora_in_form(lora_env, form: str) -> dict:
    """The saved LoRA with its text-encoder part renamed to ``form`` (kohya files with alpha = rank: scale 1)."""
    lora = {key: tensor for key, tensor in lora_env["saved"].items() if key.startswith("prior.")}
    for module in lora_env["modules"]:
        down, up, alpha = te_lora_names(form, module)
        lora[down] = lora_env["saved"][f"text_encoder.{module}.lora_A.weight"]
        lora[up] = lora_env["saved"][f"text_encoder.{module}.lora_B.weight"]
        if alpha is not None:
            lora[alpha] = torch.tensor(float(RANK))
    return lora


@torch.no_grad()
@pytest.mark.parametrize("form", ["peft", "peft_transformers4", "kohya", "onetrainer"])
def test_stock_lora_loader_applies_a_prior_and_text_encoder_lora_as_diffusers(env, lora_env, form):
    import comfy.lora
    import nodes
    from safetensors.torch import save_file
    clip, pipe = env["clips"]["prior"], env["pipes"]["prior"]
    lora = lora_in_form(lora_env, form)
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    assert len(comfy.lora.load_lora(lora, key_map)) == len(lora_env["modules"])  # every text-encoder pair found
    name = f"{form}.safetensors"
    save_file(lora, env["root"] / "loras" / name)
    model, patched_clip = nodes.LoraLoader().load_lora(lora_env["model"], clip, name, STRENGTH, STRENGTH)
    got_text = states(text_encode(patched_clip, PROMPTS[1]))
    plain = reference_embeddings(pipe, PROMPTS[1])[0]
    assert (lora_env["fused_text"] - plain).abs().max() > 1e-3  # the LoRA changes the text states
    assert_close(got_text, lora_env["fused_text"])
    got_prior = patched_output(model, lora_env["inputs"], streaming=False)
    want_prior = lora_env["fused_prior"]
    assert (got_prior - want_prior).abs().max() <= TOLERANCE * max(1.0, want_prior.abs().max())
    assert_close(states(text_encode(clip, PROMPTS[1])), plain)  # the CLIP without the LoRA is left unpatched


@torch.no_grad()
def test_a_text_encoder_only_lora_is_reported_as_such(env, lora_env, caplog):
    import nodes
    from safetensors.torch import save_file
    lora = {key: tensor for key, tensor in lora_env["saved"].items() if key.startswith("text_encoder.")}
    save_file(lora, env["root"] / "loras" / "text_encoder_only.safetensors")
    with caplog.at_level(logging.INFO):
        nodes.LoraLoader().load_lora(lora_env["model"], env["clips"]["prior"], "text_encoder_only.safetensors",
                                     STRENGTH, STRENGTH)
    reports = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Würstchen LoRA")]
    assert reports == [f"Würstchen LoRA: patched 0 weights of the prior, {len(lora_env['modules'])} weights of the "
                       f"prior's text encoder"]


def test_a_lora_that_matches_neither_part_is_one_line_naming_both(env, lora_env):
    import nodes
    from safetensors.torch import save_file
    save_file({"lora_unet_not_a_layer.lora_down.weight": torch.zeros(2, 8),
               "lora_unet_not_a_layer.lora_up.weight": torch.zeros(8, 2)}, env["root"] / "loras" / "foreign.safetensors")
    with pytest.raises(ValueError) as error:
        nodes.LoraLoader().load_lora(lora_env["model"], env["clips"]["prior"], "foreign.safetensors", 1.0, 1.0)
    message = str(error.value)
    assert message.startswith("lora_name: this LoRA patches no weight of the Würstchen prior or prior's text encoder "
                              "(its keys are like 'lora_unet_not_a_layer.lora_down.weight'); names it could match: prior.")
    assert ", text_encoder." in message and ", lora_te_…" in message and "\n" not in message
    assert len(message) <= 300, message
    assert not lora_env["model"].patches

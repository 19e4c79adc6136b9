"""Write example_workflows/: each graph in ComfyUI's UI format (drag-and-drop, templates), in API format under
api/ (POST /prompt, scripts/run_workflow.py) and as a .jpg picture of the graph (the template browser's thumbnail).
The .jpg files are screenshots of the web UI made by scripts/screenshot_workflows.py; this script draws a simple
diagram only where no .jpg exists yet (re-run the screenshot script after changing a graph).

The graphs are defined once here; widget order comes from the nodes' own INPUT_TYPES, so the two formats agree.
Run after changing a node's inputs:  python scripts/build_example_workflows.py
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "example_workflows"
from run_workflow import import_pack

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# After each run the frontend draws a new seed, as in ComfyUI's own templates, so pressing Run again makes a new
# image instead of being answered from the cache.
SEED_CONTROL = "randomize"
# The ComfyUI core nodes the examples use, with the inputs (in ComfyUI's order, which is the widget order) and
# outputs of ComfyUI 0.3.64.
SEED_INPUT = ("INT", {"default": 0, "control_after_generate": True})
CORE_NODES = {
    "KSampler": {"inputs": {"required": {
        "model": ("MODEL",), "seed": SEED_INPUT, "steps": ("INT", {"default": 20}), "cfg": ("FLOAT", {"default": 8.0}),
        "sampler_name": (["euler", "euler_ancestral", "ddpm", "dpmpp_2m"],),
        "scheduler": (["normal", "karras", "simple"],),
        "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
        "denoise": ("FLOAT", {"default": 1.0})}}, "outputs": [("LATENT", "LATENT")]},
    "CLIPTextEncode": {"inputs": {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                                               "clip": ("CLIP",)}}, "outputs": [("CONDITIONING", "CONDITIONING")]},
    "StableCascade_StageB_Conditioning": {"inputs": {"required": {"conditioning": ("CONDITIONING",),
                                                                  "stage_c": ("LATENT",)}},
                                          "outputs": [("CONDITIONING", "CONDITIONING")]},
    "VAEDecode": {"inputs": {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}, "outputs": [("IMAGE", "IMAGE")]},
    "SamplerCustomAdvanced": {"inputs": {"required": {"noise": ("NOISE",), "guider": ("GUIDER",),
                                                      "sampler": ("SAMPLER",), "sigmas": ("SIGMAS",),
                                                      "latent_image": ("LATENT",)}},
                              "outputs": [("output", "LATENT"), ("denoised_output", "LATENT")]},
    "RandomNoise": {"inputs": {"required": {"noise_seed": SEED_INPUT}}, "outputs": [("NOISE", "NOISE")]},
    "CFGGuider": {"inputs": {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",),
                                          "negative": ("CONDITIONING",), "cfg": ("FLOAT", {"default": 8.0})}},
                  "outputs": [("GUIDER", "GUIDER")]},
    "LoraLoaderModelOnly": {"inputs": {"required": {"model": ("MODEL",), "lora_name": (["example.safetensors"],),
                                                    "strength_model": ("FLOAT", {"default": 1.0})}},
                            "outputs": [("MODEL", "MODEL")]},
    "SaveImage": {"inputs": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
                  "outputs": []},
    "LoadImage": {"inputs": {"required": {"image": (["example.png"], {"image_upload": True})}},
                  "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")]},
    "ImageScale": {"inputs": {"required": {
        "image": ("IMAGE",), "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
        "width": ("INT", {"default": 512}), "height": ("INT", {"default": 512}), "crop": (["disabled", "center"],)}},
        "outputs": [("IMAGE", "IMAGE")]},
    "VAEEncode": {"inputs": {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}, "outputs": [("LATENT", "LATENT")]},
    "StableCascade_EmptyLatentImage": {"inputs": {"required": {
        "width": ("INT", {"default": 1024}), "height": ("INT", {"default": 1024}),
        "compression": ("INT", {"default": 42}), "batch_size": ("INT", {"default": 1})}},
        "outputs": [("stage_c", "LATENT"), ("stage_b", "LATENT")]},
}


@dataclass
class Node:
    id: int
    type: str
    pos: tuple
    inputs: dict = field(default_factory=dict)   # name → constant, or (source node id, output slot)
    title: str = ""


def node_schema(class_type: str):
    if class_type in CORE_NODES:
        spec = CORE_NODES[class_type]
        return spec["inputs"], spec["outputs"]
    cls = import_pack().NODE_CLASS_MAPPINGS[class_type]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return cls.INPUT_TYPES(), list(zip(names, cls.RETURN_TYPES))


def ordered_inputs(schema: dict):
    for section in ("required", "optional"):
        yield from schema.get(section, {}).items()


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def node_size(class_type: str, schema: dict, sockets: int, outputs: int, title: str = "") -> list:
    """Roughly the size the frontend gives the node, so nodes placed below it do not overlap it; wide enough for its
    title."""
    widgets = [spec for _, spec in ordered_inputs(schema) if is_widget(spec)]
    height = 30 + 24 * (max(sockets, outputs) + len(widgets))
    height += 100 * sum(1 for spec in widgets if len(spec) > 1 and spec[1].get("multiline"))
    height += 280 if class_type == "LoadImage" else 0
    return [max(320, 60 + 8 * len(title)), height]


def widget_values(node: Node, schema: dict) -> list:
    """Values in widget order, with the extra control value after a seed and after an upload combo."""
    values = []
    for name, spec in ordered_inputs(schema):
        if not is_widget(spec):
            continue
        options = spec[1] if len(spec) > 1 else {}
        values.append(node.inputs.get(name, options.get("default")))
        if options.get("control_after_generate") or name in ("seed", "noise_seed"):
            values.append(SEED_CONTROL)
        if options.get("image_upload"):
            values.append("image")
    return values


def display_title(node: Node) -> str:
    return node.title or import_pack().NODE_DISPLAY_NAME_MAPPINGS.get(node.type, node.type)


def api_format(nodes: list[Node]) -> dict:
    prompt = {}
    for node in nodes:
        inputs = {k: [str(v[0]), v[1]] if isinstance(v, tuple) else v for k, v in node.inputs.items()}
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": display_title(node)}}
    return prompt


def ui_format(nodes: list[Node]) -> dict:
    links, ui_nodes, outgoing = [], [], {}
    by_id = {node.id: node for node in nodes}
    for node in nodes:
        schema, _ = node_schema(node.type)
        for slot, (name, spec) in enumerate((n, s) for n, s in ordered_inputs(schema) if not is_widget(s)):
            source = node.inputs.get(name)
            if isinstance(source, tuple):
                link_id = len(links) + 1
                output_type = node_schema(by_id[source[0]].type)[1][source[1]][1]  # a link carries its output's type
                links.append([link_id, source[0], source[1], node.id, slot, output_type])
                outgoing.setdefault((source[0], source[1]), []).append(link_id)
    link_of_target = {(l[3], l[4]): l[0] for l in links}
    for order, node in enumerate(nodes):
        schema, outputs = node_schema(node.type)
        sockets = [(n, s) for n, s in ordered_inputs(schema) if not is_widget(s)]
        titled = {"title": node.title} if node.title else {}  # without one the UI shows the display name
        ui_nodes.append({
            **titled, "id": node.id, "type": node.type, "pos": list(node.pos), "size": node_size(node.type, schema, len(sockets), len(outputs), display_title(node)),
            "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": n, "type": s[0], "link": link_of_target.get((node.id, i))} for i, (n, s) in enumerate(sockets)],
            "outputs": [{"name": n, "type": t, "links": outgoing.get((node.id, i), []), "slot_index": i}
                        for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widget_values(node, schema),
        })
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4}


def draw_graph(ui: dict, path: Path) -> None:
    """A picture of the graph: nodes as boxes, links as lines from output to input (fallback for a screenshot)."""
    xs = [n["pos"][0] for n in ui["nodes"]]
    ys = [n["pos"][1] for n in ui["nodes"]]
    scale, margin = 0.5, 20
    width = int((max(xs) - min(xs) + 340) * scale) + 2 * margin
    height = int((max(ys) - min(ys) + 260) * scale) + 2 * margin
    image = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(image)
    box = {}
    for n in ui["nodes"]:
        x0 = margin + (n["pos"][0] - min(xs)) * scale
        y0 = margin + (n["pos"][1] - min(ys)) * scale
        box[n["id"]] = (x0, y0, x0 + 160, y0 + 20 + 12 * max(len(n["inputs"]), len(n["outputs"]), 2))
    for _, src, src_slot, dst, dst_slot, _ in ui["links"]:
        sx, sy = box[src][2], box[src][1] + 26 + 12 * src_slot
        dx, dy = box[dst][0], box[dst][1] + 26 + 12 * dst_slot
        draw.line([(sx, sy), ((sx + dx) / 2, sy), ((sx + dx) / 2, dy), (dx, dy)], fill=(120, 170, 230), width=2)
    for n in ui["nodes"]:
        x0, y0, x1, y1 = box[n["id"]]
        draw.rounded_rectangle((x0, y0, x1, y1), radius=6, fill=(53, 53, 60), outline=(90, 90, 100))
        draw.rectangle((x0, y0, x1, y0 + 16), fill=(70, 70, 80))
        title = n.get("title") or import_pack().NODE_DISPLAY_NAME_MAPPINGS.get(n["type"], n["type"])
        draw.text((x0 + 5, y0 + 3), title.replace("Würstchen", "W.")[:26], fill=(230, 230, 230))
    image.save(path, quality=90)


PROMPT = "an oil painting of a cozy cabin in a snowy forest at dusk, warm light in the windows"


def text_to_image() -> list[Node]:
    """The two checkpoint loaders, stock CLIPTextEncode and VAEDecode, and the pack's two samplers (the reference's
    sampler and schedules on the MODELs, through ComfyUI's sampling): 9 nodes."""
    return [
        Node(1, "WuerstchenPriorCheckpointLoader", (0, 0), {"folder": "wuerstchen-prior", "weight_dtype": "auto"}),
        Node(2, "WuerstchenDecoderCheckpointLoader", (0, 600), {"folder": "wuerstchen", "weight_dtype": "auto"}),
        Node(3, "CLIPTextEncode", (500, 0), {"text": PROMPT, "clip": (1, 1)}, "Prior positive"),
        Node(4, "CLIPTextEncode", (500, 260), {"text": "", "clip": (1, 1)}, "Prior negative"),
        Node(5, "WuerstchenPriorSampler", (880, 0), {
            "prior": (1, 0), "positive": (3, 0), "negative": (4, 0), "seed": 42, "steps": 29, "schedule": "reference",
            "cfg": 4.0, "width": 1024, "height": 1024, "batch_size": 1, "denoise": 1.0}),
        Node(8, "CLIPTextEncode", (500, 600), {"text": PROMPT, "clip": (2, 1)}, "Decoder positive"),
        Node(9, "WuerstchenDecoderSampler", (880, 520), {
            "decoder": (2, 0), "positive": (8, 0), "prior_latent": (5, 0), "seed": 42, "steps": 12, "cfg": 0.0,
            "denoise": 1.0}),
        Node(11, "VAEDecode", (1380, 520), {"samples": (9, 0), "vae": (2, 2)}),
        Node(12, "SaveImage", (1640, 520), {"images": (11, 0), "filename_prefix": "wuerstchen"}),
    ]


def image_to_image() -> list[Node]:
    """The decoder re-draws an image (resized, centre-cropped and encoded by Stage A) under the prior's guidance;
    denoise sets how much changes."""
    nodes = {n.id: n for n in text_to_image()}
    nodes[5].inputs.update(width=512, height=512)
    nodes[13] = Node(13, "LoadImage", (0, 900), {"image": "wuerstchen_example_input.png"})
    nodes[14] = Node(14, "ImageScale", (500, 900), {"image": (13, 0), "upscale_method": "bilinear", "width": 512,
                                                    "height": 512, "crop": "center"}, "Resize to the prior's size")
    nodes[15] = Node(15, "VAEEncode", (880, 960), {"pixels": (14, 0), "vae": (2, 2)})
    nodes[9].inputs.update(latent=(15, 0), denoise=0.6)
    nodes[12].inputs["filename_prefix"] = "wuerstchen_img2img"
    return [nodes[i] for i in sorted(nodes)]


def image_variation() -> list[Node]:
    """The prior starts from the input image's own Stage C latent (EfficientNet) and re-draws it under the prompt;
    denoise sets how far the variation strays from the image."""
    prompt = "a bright yellow sun over a smooth colourful gradient, soft light, digital art"
    nodes = {n.id: n for n in text_to_image()}
    nodes[3].inputs["text"] = nodes[8].inputs["text"] = prompt
    nodes[13] = Node(13, "LoadImage", (500, 900), {"image": "wuerstchen_example_input.png"})
    nodes[14] = Node(14, "WuerstchenVAELoader", (0, 900), {"vqgan_name": "model_v2_stage_b.pt",
                                                            "weight_dtype": "auto"}, "EfficientNet encoder (VAE)")
    nodes[15] = Node(15, "WuerstchenEfficientNetEncode", (880, 960), {"effnet": (14, 0), "image": (13, 0),
                                                                      "width": 1024, "height": 1024})
    nodes[5].inputs.update(latent=(15, 0), denoise=0.7)
    nodes[12].inputs["filename_prefix"] = "wuerstchen_variation"
    return [nodes[i] for i in sorted(nodes)]


def native_common() -> dict[int, Node]:
    """The stages as MODELs from the two checkpoint loaders, both prompts encoded with stock CLIPTextEncode on the
    loaders' CLIPs, empty latents of the right size."""
    return {n.id: n for n in [
        Node(1, "WuerstchenPriorCheckpointLoader", (0, 0), {"folder": "wuerstchen-prior", "weight_dtype": "auto"}),
        Node(2, "WuerstchenDecoderCheckpointLoader", (0, 600), {"folder": "wuerstchen", "weight_dtype": "auto"}),
        Node(3, "CLIPTextEncode", (380, 0), {"text": PROMPT, "clip": (1, 1)}, "Prior positive"),
        Node(4, "CLIPTextEncode", (380, 260), {"text": "", "clip": (1, 1)}, "Prior negative"),
        Node(5, "CLIPTextEncode", (380, 600), {"text": PROMPT, "clip": (2, 1)}, "Decoder positive"),
        Node(6, "CLIPTextEncode", (380, 860), {"text": "", "clip": (2, 1)}, "Decoder negative"),
        Node(7, "StableCascade_EmptyLatentImage", (0, 400), {"width": 1024, "height": 1024, "compression": 42,
                                                             "batch_size": 1}),
        Node(20, "SaveImage", (2280, 400), {"images": (19, 0), "filename_prefix": "wuerstchen_native"}),
    ]}


def _past_the_loaders(nodes: dict[int, Node]) -> list[Node]:
    """The nodes in id order, every column right of the loaders moved 120 px further right, past their long titles."""
    for node in nodes.values():
        if node.pos[0] >= 380:
            node.pos = (node.pos[0] + 120, node.pos[1])
    return [nodes[i] for i in sorted(nodes)]


def native_ksampler() -> list[Node]:
    """Stock KSampler on both stages: the prior at cfg 4, the decoder unguided (cfg 1.0 = the reference's cfg 0)."""
    nodes = native_common()
    nodes.update({n.id: n for n in [
        Node(8, "KSampler", (760, 0), {"model": (1, 0), "seed": 42, "steps": 29, "cfg": 4.0, "sampler_name": "ddpm",
                                       "scheduler": "simple", "positive": (3, 0), "negative": (4, 0),
                                       "latent_image": (7, 0), "denoise": 1.0}, "KSampler (prior, Stage C)"),
        Node(9, "StableCascade_StageB_Conditioning", (1140, 400), {"conditioning": (5, 0), "stage_c": (8, 0)}),
        Node(10, "KSampler", (1520, 400), {"model": (2, 0), "seed": 42, "steps": 12, "cfg": 1.0,
                                           "sampler_name": "ddpm", "scheduler": "simple", "positive": (9, 0),
                                           "negative": (6, 0),
                                           "latent_image": (7, 1), "denoise": 1.0}, "KSampler (decoder, Stage B)"),
        Node(19, "VAEDecode", (1900, 400), {"samples": (10, 0), "vae": (2, 2)}),
    ]})
    return _past_the_loaders(nodes)


def native_reference() -> list[Node]:
    """SamplerCustomAdvanced with the reference's schedules and sampler: diffusers' pipelines at the same seed."""
    nodes = native_common()
    nodes.update({n.id: n for n in [
        Node(8, "RandomNoise", (760, 0), {"noise_seed": 42}),
        Node(9, "CFGGuider", (760, 160), {"model": (1, 0), "positive": (3, 0), "negative": (4, 0), "cfg": 4.0},
             "CFGGuider (prior, cfg 4)"),
        Node(10, "WuerstchenSampler", (760, 380), {"steps": 29, "schedule": "reference", "denoise": 1.0},
             "Würstchen DDPM Sampler (prior, 29-step reference)"),
        Node(12, "SamplerCustomAdvanced", (1140, 0), {"noise": (8, 0), "guider": (9, 0), "sampler": (10, 0),
                                                      "sigmas": (10, 1), "latent_image": (7, 0)},
             "SamplerCustomAdvanced (prior, Stage C)"),
        Node(13, "StableCascade_StageB_Conditioning", (1140, 400), {"conditioning": (5, 0), "stage_c": (12, 0)}),
        Node(14, "CFGGuider", (1520, 560), {"model": (2, 0), "positive": (13, 0), "negative": (6, 0), "cfg": 1.0},
             "CFGGuider (decoder, unguided)"),
        Node(15, "WuerstchenSampler", (1520, 760), {"steps": 12, "schedule": "linear", "denoise": 1.0},
             "Würstchen DDPM Sampler (decoder, 12 linear)"),
        Node(16, "SamplerCustomAdvanced", (1900, 400), {"noise": (8, 0), "guider": (14, 0), "sampler": (15, 0),
                                                        "sigmas": (15, 1), "latent_image": (7, 1)},
             "SamplerCustomAdvanced (decoder, Stage B)"),
        Node(19, "VAEDecode", (2280, 200), {"samples": (16, 0), "vae": (2, 2)}),
    ]})
    nodes[20].pos = (2660, 200)
    nodes[20].inputs["filename_prefix"] = "wuerstchen_reference"
    return _past_the_loaders(nodes)


def native_prior_lora() -> list[Node]:
    """The stock KSampler graph with a prior LoRA (diffusers, OneTrainer or kohya naming) via LoraLoaderModelOnly."""
    nodes = {n.id: n for n in native_ksampler()}
    nodes[11] = Node(11, "LoraLoaderModelOnly", (880, 340), {
        "model": (1, 0), "lora_name": "wuerstchen_prior_lora.safetensors", "strength_model": 1.0}, "Prior LoRA")
    nodes[8].inputs["model"] = (11, 0)
    nodes[20].inputs["filename_prefix"] = "wuerstchen_lora"
    return [nodes[i] for i in sorted(nodes)]


def example_input_image(path: Path, size: int = 512) -> None:
    """A soft gradient with a circle: small as a PNG, and easy to recognise after image-to-image."""
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), image.rotate(90).getchannel(0), Image.new("L", (size, size), 160)))
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(240, 200, 60))
    image.save(path, optimize=True)


WORKFLOWS = {"wuerstchen_text_to_image": text_to_image, "wuerstchen_image_to_image": image_to_image,
             "wuerstchen_image_variation": image_variation,
             "wuerstchen_native_ksampler": native_ksampler, "wuerstchen_native_reference": native_reference,
             "wuerstchen_native_prior_lora": native_prior_lora}


def main() -> None:
    (OUT / "api").mkdir(parents=True, exist_ok=True)  # a sub-folder, so ComfyUI lists only UI-format templates
    for name, build in WORKFLOWS.items():
        nodes = build()
        ui = ui_format(nodes)
        (OUT / f"{name}.json").write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (OUT / "api" / f"{name}.json").write_text(json.dumps(api_format(nodes), indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        if not (OUT / f"{name}.jpg").exists():  # keep the screenshot of scripts/screenshot_workflows.py
            draw_graph(ui, OUT / f"{name}.jpg")
    example_input_image(OUT / "wuerstchen_example_input.png")
    print(f"wrote {len(WORKFLOWS)} workflows to {OUT}")


if __name__ == "__main__":
    main()

"""The round trip that makes a GGUF export trustworthy: the file is loaded in llama.cpp itself and compared with the
HF merged model it came from. Each check names what it compared; the first failure refuses the export.

1. tokens: llama.cpp's token ids equal the HF tokenizer's on ~1,000 strings (the run's data, its rendered chat
   conversations, and fixed hard cases: whitespace runs, digits, emoji, accents, CJK, special-token text);
2. chat_template: llama.cpp's chat formatting from the GGUF metadata gives the HF template's prompt text;
3. generation: greedy answers to the test prompts; f16: identical tokens to the HF model; q8_0: top-1 agreement
   >= 99% along the HF continuation (teacher-forced); q4_0: agreement measured and reported;
4. stop: every id HF stops at (tokenizer eos, generation-config eos, the template's end-of-turn token) is an
   end-of-generation token in llama.cpp, no ordinary token is, and answers that stop in HF stop there too.
"""
from __future__ import annotations

from collections.abc import Sequence

from tuneforge.export.gguf import GGUFExportError

AGREEMENT_BAR = {"f16": 1.0, "q8_0": 0.99}

HARD_STRINGS = [
    "", " ", "  ", "\n", "\n\n", " \n \n\n", "\t", "\t\t x", "Hello world", " Hello", "hello  world   !",
    "3", "33", "333", "3333", "12345678", "3.14159", "1,000,000", "v1.2.3-rc4", "2026-12-02T13:00:00Z",
    "café naïve résumé", "¿Qué tal? ¡Bien!", "日本語のテキスト", "我想在apple工作", "нещо на Български",
    "🚀 (emoji) 😶‍🌫️ ✅ 🦙🦙", "I've been 'told he's there, 'RE you sure? 'M not", "''''```````\"\"\"\"......!!!!",
    '{"name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0958"}', "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>", "a<|im_end|>b", "def f(x):\n    return x ** 2\n", "https://example.com/a?b=c&d=e#f",
    "  leading and trailing  ", "CamelCaseWords and snake_case_words", "mixed123numbers456", "ALL CAPS TEXT",
]


def probe_strings(items: Sequence[dict], tokenizer, limit: int = 1000) -> list[str]:
    """~`limit` strings for the token round trip: hard cases, every message and reference of the items, each item's
    rendered conversation (with and without the answer), then word windows of those until `limit` is reached."""
    strings: list[str] = list(HARD_STRINGS)
    for item in items:
        messages = item.get("messages") or []
        strings.extend(m.get("content", "") for m in messages)
        if item.get("reference"):
            strings.append(str(item["reference"]))
        if item.get("prompt"):
            strings.append(str(item["prompt"]))
        if messages and getattr(tokenizer, "chat_template", None):
            strings.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            if item.get("reference"):
                answered = list(messages) + [{"role": "assistant", "content": str(item["reference"])}]
                strings.append(tokenizer.apply_chat_template(answered, tokenize=False))
    out = list(dict.fromkeys(strings))
    seen = set(out)
    # Then pieces of those texts cut at word and at character boundaries (mid-word cuts exercise partial BPE
    # merges), until `limit` distinct strings are reached.
    texts = [t for t in out if len(t) > 8]
    for step in range(1, 40):
        for text in texts:
            words = text.split(" ")
            width = 1 + step % 7
            offset = step % max(1, len(words))
            cut = step * 7 % max(1, len(text) - 4)
            for piece in (" ".join(words[offset:offset + width]), text[cut:cut + 5 + step * 3]):
                if piece not in seen:
                    seen.add(piece)
                    out.append(piece)
            if len(out) >= limit:
                return out[:limit]
    return out[:limit]


def check_tokens(llama, tokenizer, strings: list[str]) -> dict:
    for text in strings:
        expected = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        got = llama.tokenize(text)
        if got != expected:
            raise GGUFExportError(f"check 1 (tokens) failed: llama.cpp tokenises {text[:60]!r} as {got[:12]} but the "
                                  f"HF tokenizer gives {expected[:12]}",
                                  hint=f"pre-tokenizer {llama.metadata.get('tokenizer.ggml.pre')!r} does not match")
    # add_special: whether BOS/EOS are added must agree too, or every raw prompt starts differently.
    for text in ("Hello world", "x"):
        expected = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        got = llama.tokenize(text, add_special=True)
        if got != expected:
            raise GGUFExportError(f"check 1 (tokens) failed: with special tokens llama.cpp gives {got} for {text!r}, "
                                  f"HF gives {expected} (add_bos/add_eos flags differ)")
    return {"strings": len(strings), "equal": len(strings)}


def check_chat_template(llama, tokenizer, conversations: list[list[dict]]) -> dict:
    if not getattr(tokenizer, "chat_template", None):
        return {"skipped": "the model has no chat template"}
    if llama.chat_template != tokenizer.chat_template:
        raise GGUFExportError("check 2 (chat_template) failed: the GGUF's tokenizer.chat_template is not "
                              "byte-equal to the model's own template")
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = llama.render(messages)
        if got != expected:
            raise GGUFExportError(f"check 2 (chat_template) failed: llama.cpp renders {got[:80]!r}, the HF template "
                                  f"{expected[:80]!r}")
    return {"conversations": len(conversations), "equal": len(conversations)}


def check_stop(llama, model, tokenizer) -> dict:
    from tuneforge.models.inference import end_of_turn_id, stop_token_ids

    wanted = stop_token_ids(model, tokenizer)
    missing = [i for i in wanted if i not in llama.eog_ids]
    if missing:
        names = [tokenizer.convert_ids_to_tokens(i) for i in missing]
        raise GGUFExportError(f"check 4 (stop) failed: llama.cpp does not end generation at {names} (ids {missing}); "
                              "answers would run past the end of the turn")
    special = set(tokenizer.all_special_ids) | {int(i) for i in tokenizer.added_tokens_decoder}
    ordinary = sorted(i for i in llama.eog_ids if i not in special)
    if ordinary:
        raise GGUFExportError(f"check 4 (stop) failed: llama.cpp ends generation at ordinary token(s) "
                              f"{[tokenizer.convert_ids_to_tokens(i) for i in ordinary[:5]]} (ids {ordinary[:5]}); "
                              "answers would stop mid-text",
                              hint="the GGUF's eos/eot ids do not match the tokenizer's; was a template tampered with?")
    eot = end_of_turn_id(tokenizer)
    return {"stop_ids": wanted, "end_of_turn": tokenizer.convert_ids_to_tokens(eot) if eot is not None else None,
            "llama_cpp_eog": sorted(llama.eog_ids)}


def check_generation(llama, model, tokenizer, prompts: list[list[int]], quant: str, max_new_tokens: int) -> dict:
    """Greedy HF tokens vs llama.cpp: free-running equality (f16) and teacher-forced top-1 agreement (all)."""
    import numpy as np

    from tuneforge.models.inference import InferenceEngine, stop_token_ids

    if quant == "f16":
        # The file holds the weights rounded to float16: the exact reference is the HF model with those same weights
        # (computed in float32). Against the unrounded fp32 model a near-tie on the greedy path (measured: `{"` vs
        # `{\n` after an 8-step LoRA run) flips with the rounding alone and would refuse a faithful file.
        model = weights_as_stored(model)
    engine = InferenceEngine(model, tokenizer, name="merged")
    reference = engine.generate(prompts, max_new_tokens=max_new_tokens, batch_size=8, progress=False)
    stop_ids = stop_token_ids(model, tokenizer)
    agree = total = identical = 0
    stops_expected = stops_matched = 0
    first_diff = None
    for prompt, ref in zip(prompts, reference):
        # The HF continuation, with the stop token it ended on: llama.cpp must predict that token too.
        target = list(ref.token_ids)
        if ref.finish_reason == "stop":
            target.append(_stop_token(model, tokenizer, prompt, target, stop_ids))
        logits = llama.logits(list(prompt) + target)
        predicted = np.argmax(logits[len(prompt) - 1: len(prompt) - 1 + len(target)], axis=1).tolist()
        agree += sum(int(p == t) for p, t in zip(predicted, target))
        total += len(target)
        tokens, reason = llama.greedy(prompt, max_new_tokens)
        if tokens == list(ref.token_ids) and reason == ref.finish_reason:
            identical += 1
        elif first_diff is None:
            first_diff = {"hf": tokenizer.decode(ref.token_ids)[:80], "llama_cpp": llama.decode(tokens)[:80]}
        if ref.finish_reason == "stop":
            stops_expected += 1
            stops_matched += int(reason == "stop")
    agreement = agree / total if total else 1.0
    result = {"prompts": len(prompts), "identical": identical, "top1_agreement": round(agreement, 5),
              "positions": total, "stops_expected": stops_expected, "stops_matched": stops_matched}
    if quant == "f16" and identical != len(prompts):
        raise GGUFExportError(f"check 3 (generation) failed: f16 greedy tokens differ from the HF merged model on "
                              f"{len(prompts) - identical} of {len(prompts)} prompts (first: {first_diff})")
    bar = AGREEMENT_BAR.get(quant)
    if bar is not None and agreement < bar:
        raise GGUFExportError(f"check 3 (generation) failed: {quant} top-1 agreement {agreement:.2%} with the HF "
                              f"merged model is below {bar:.0%} over {total} positions")
    if quant in AGREEMENT_BAR and stops_matched != stops_expected:
        raise GGUFExportError(f"check 4 (stop) failed: {stops_expected - stops_matched} answers that end at the "
                              "end-of-turn token in HF do not stop in llama.cpp")
    return result


def weights_as_stored(model):
    """A copy of `model` whose tensors that an f16 GGUF stores as float16 (write_gguf's own tensor_type rule:
    matrices; vectors such as norm weights stay float32 in the file) are rounded to float16 and back."""
    import copy

    import torch
    from gguf import GGMLQuantizationType

    from tuneforge.export.gguf import tensor_type

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in rounded.named_parameters():
            if tensor.is_floating_point() and tensor_type(name, tensor, "f16") == GGMLQuantizationType.F16:
                tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return rounded


def _stop_token(model, tokenizer, prompt: list[int], target: list[int], stop_ids: list[int]) -> int:
    """The stop id HF's greedy step chose (the engine cuts it from the answer): its argmax among the stop ids."""
    import torch

    from tuneforge.models.inference import model_device

    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + target], device=model_device(model))).logits[0, -1]
    return int(stop_ids[int(torch.argmax(logits[stop_ids]))])


def verify_gguf(path, model, tokenizer, quant: str, *, items: Sequence[dict], max_new_tokens: int = 64,
                n_prompts: int = 8, n_strings: int = 1000) -> dict:
    """Run the four checks on the GGUF at `path`; returns their measurements, raises GGUFExportError on failure."""
    from tuneforge.models.llamacpp import LlamaCppModel

    llama = LlamaCppModel(path)
    checks = {"tokens": check_tokens(llama, tokenizer, probe_strings(items, tokenizer, n_strings))}
    conversations = [list(i["messages"]) for i in items if i.get("messages")] or [
        [{"role": "system", "content": "You are concise."}, {"role": "user", "content": "Name three colours."}],
        [{"role": "user", "content": "Count from one to five."}]]
    checks["chat_template"] = check_chat_template(llama, tokenizer, conversations)
    checks["stop"] = check_stop(llama, model, tokenizer)
    from tuneforge.models.inference import InferenceEngine

    engine = InferenceEngine(model, tokenizer)
    prompts = [engine.prompt_ids(item) for item in (items[:n_prompts] or
                                                    [{"messages": c} for c in conversations[:n_prompts]])]
    checks["generation"] = check_generation(llama, model, tokenizer, prompts, quant, max_new_tokens)
    return checks

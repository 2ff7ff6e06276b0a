"""QLoRA (Dettmers et al. 2023): LoRA on a frozen base quantised to 4-bit NF4 with double quantisation.

The base is loaded through transformers' bitsandbytes integration; the CPU gradient workaround lives in
tuneforge.integrations.bnb. The adapter is a normal PEFT LoRA adapter (loads on a full-precision base too).

Merging: the trained and evaluated model computes with the *dequantised* 4-bit weights, so the merged model is
dequant(W) + B @ A * scale, which reproduces the evaluated model exactly (merged == adapter within 1e-4). Merging
into the original full-precision weights instead would give a model that was never evaluated.
"""
from __future__ import annotations

from tuneforge.methods.lora import LoraMethod


class QLoraMethod(LoraMethod):
    name = "qlora"

    def quantization_config(self, dtype: str):
        import torch
        from transformers import BitsAndBytesConfig

        options = self.config.qlora
        compute = options.compute_dtype or dtype
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, compute),
        )

    def load_base(self, resolved, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM

        from tuneforge.integrations.bnb import keep_cpu_4bit_gradients_exact, require_bitsandbytes
        from tuneforge.models.loading import _load_error

        require_bitsandbytes()
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        try:
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path, dtype=getattr(torch, dtype), device_map={"": device},
                quantization_config=self.quantization_config(dtype),
            )
        except Exception as error:  # noqa: BLE001 - same failure surface as load_model
            raise _load_error(resolved, "model", error) from error
        keep_cpu_4bit_gradients_exact(model)
        return model

    def apply(self, model):
        from peft import prepare_model_for_kbit_training

        from tuneforge.integrations.bnb import keep_cpu_4bit_gradients_exact

        # Freezes the base, casts norms/embeddings kept in half precision to fp32 for stable training.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_cpu_4bit_gradients_exact(model)
        return super().apply(model)

    def trainable_parameters(self, model) -> dict:
        from tuneforge.integrations.bnb import linear4bit_modules
        from tuneforge.methods.base import trainable_parameter_report

        report = trainable_parameter_report(model)
        # A Params4bit stores two 4-bit codes per uint8 element; count the weights it stands for.
        hidden = sum(layer.weight.quant_state.shape.numel() - layer.weight.numel()
                     for layer in linear4bit_modules(model))
        report["total"] += hidden
        report["share"] = report["trainable"] / report["total"] if report["total"] else 0.0
        return report

    def merged_model(self, model):
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        adapter_state = get_peft_model_state_dict(model)
        peft_config = model.peft_config[model.active_adapter]
        compute_dtype = model.get_base_model().config.quantization_config.bnb_4bit_compute_dtype
        base = model.unload()  # base model with its Linear4bit layers, LoRA layers removed
        base = base.dequantize(dtype=compute_dtype)  # Linear4bit -> nn.Linear holding dequant(W); marker removed
        plain = get_peft_model(base, peft_config)
        set_peft_model_state_dict(plain, adapter_state)
        return plain.merge_and_unload()

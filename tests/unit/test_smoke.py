def test_tiny_model_forward(tiny_model, tokenizer):
    batch = tokenizer(["hello world"], return_tensors="pt")
    out = tiny_model(**batch)
    assert out.logits.shape[-1] == 49152

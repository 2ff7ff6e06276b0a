"""How the server runs models: the batching ServingEngine, its iteration-level loop, and the llama.cpp and vLLM
engines behind the same surface."""

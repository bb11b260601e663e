"""Real sentences every export is validated on: short and long, punctuation, casing, numbers, non-ASCII."""

VALIDATION_SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "The film is a charming, funny and ultimately moving portrait of a family.",
    "a gorgeous , witty , seductive movie .",
    "it 's a cookie-cutter movie , a cut-and-paste job .",
    "The service was slow, the food was cold, and nobody apologised.",
    "Not bad at all.",
    "This is not a good product, and I would not buy it again.",
    "OK.",
    "",
    "The quick brown fox jumps over the lazy dog 42 times in 2026.",
    "Das Essen war ausgezeichnet, aber der Service war schrecklich.",
    "naïve café résumé — Zürich, São Paulo, Kraków",
    "東京は日本の首都です。",
    "Great phone 👍👍 but the battery 🔋 dies fast 😞",
    "What time does the train to Edinburgh leave on Sunday morning?",
    "the plot is nothing but boilerplate clichés from start to finish , without a single surprise or a "
    "moment of genuine feeling , and the actors seem as bored as the audience by the time the credits roll , "
    "which cannot come soon enough for anyone who paid for a ticket .",
    "A masterpiece.",
    "Terrible. Just terrible.",
    "I expected worse, honestly; it was fine.",
]

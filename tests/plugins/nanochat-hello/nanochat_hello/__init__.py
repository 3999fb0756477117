"""nanochat-hello: a small third-party plugin exercising every kind of hook."""

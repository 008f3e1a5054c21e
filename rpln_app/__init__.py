"""The Gradio app's non-layout parts: settings, the model registry and the event handlers."""

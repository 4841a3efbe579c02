"""The deployment artifact of a trained run: a serving SavedModel.

Its one signature, `serving_default`, maps `images` (uint8 pixels, [batch, height, width,
channels]) to `logits` and `probabilities`; the dataset's standardisation is inside, so the
SavedModel is all a runtime needs (TF Serving, the LiteRT converter). It holds the stripped
model's weights, pruned entries still zero.

Keras's own `model.save` would also trace every layer's call function for reloading as Keras
layers: six times slower on a tiny SMASH network (24 s against 4 s here) and unused by a
runtime; the architecture string and the checkpoint rebuild the Keras model.
"""
import tensorflow as tf

from scas_tf.data.pipeline import normalize


class ServingModule(tf.Module):
    def __init__(self, model, info):
        super().__init__()
        self.model_weights = list(model.weights)  # tracked, so that the SavedModel holds them
        spec = tf.TensorSpec([None, *info.image_shape], tf.uint8, name="images")

        @tf.function(input_signature=[spec])
        def serve(images):
            logits = model(normalize(images, info), training=False)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
        self.serve = serve


def save_serving_model(model, info, directory):
    module = ServingModule(model, info)
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})

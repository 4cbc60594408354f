//! Tensors of a federated model, shared by the coordinator and participants: their specs
//! (name, dtype, shape), the payload layout of models and updates, and the f32 views both
//! sides compute on.
//!
//! ```text
//!   payload = tensor₁ ‖ tensor₂ ‖ …   in spec order, each row-major, little-endian, no padding
//!   size    = Σ product(shape) × size(dtype)
//! ```
//! Models Synod aggregates are f32 throughout; masked secure-aggregation updates carry the same
//! names and shapes as i64. Pure: no I/O.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use synod_proto::v1 as pb;

/// Most tensors in one model.
pub const TENSORS_MAX: usize = 4096;
/// Longest tensor name, in characters.
pub const TENSOR_NAME_CHARS_MAX: usize = 256;
/// Most dimensions of one tensor.
pub const RANK_MAX: usize = 8;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE 754 binary64.
    F64,
    /// Signed 64-bit integer: the encoding of masked updates.
    I64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }
}

/// Name, element type and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Unique within the model.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions; empty for a scalar.
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// An f32 tensor.
    pub fn f32(name: impl Into<String>, shape: &[u64]) -> Self {
        Self {
            name: name.into(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements, `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d))
    }

    /// The same name and shape with another element type.
    pub fn with_dtype(&self, dtype: Dtype) -> Self {
        Self {
            dtype,
            ..self.clone()
        }
    }
}

/// A spec list that cannot describe a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TensorError {
    /// The offending field, e.g. `tensors[2].shape`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn tensor_error(field: String, problem: impl Into<String>) -> TensorError {
    TensorError {
        field,
        problem: problem.into(),
    }
}

/// Checks names (present, unique, bounded), ranks and sizes; returns the payload size.
pub fn validate(specs: &[TensorSpec], field: &str) -> Result<u64, TensorError> {
    if specs.is_empty() {
        return Err(tensor_error(field.to_owned(), "at least one tensor"));
    }
    if specs.len() > TENSORS_MAX {
        return Err(tensor_error(
            field.to_owned(),
            format!("{} tensors, at most {TENSORS_MAX}", specs.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut total = 0u64;
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("{field}[{i}]");
        check_name(spec, &at)?;
        if !names.insert(spec.name.as_str()) {
            return Err(tensor_error(
                format!("{at}.name"),
                format!("'{}' appears twice", spec.name),
            ));
        }
        if spec.shape.len() > RANK_MAX {
            return Err(tensor_error(
                format!("{at}.shape"),
                format!("rank {}, at most {RANK_MAX}", spec.shape.len()),
            ));
        }
        let bytes = spec
            .elements()
            .and_then(|n| n.checked_mul(spec.dtype.size_bytes()))
            .and_then(|b| total.checked_add(b));
        total = bytes.ok_or_else(|| tensor_error(format!("{at}.shape"), "size overflows"))?;
    }
    Ok(total)
}

fn check_name(spec: &TensorSpec, at: &str) -> Result<(), TensorError> {
    if spec.name.is_empty() {
        return Err(tensor_error(format!("{at}.name"), "required"));
    }
    if spec.name.chars().count() > TENSOR_NAME_CHARS_MAX {
        return Err(tensor_error(
            format!("{at}.name"),
            format!("longer than {TENSOR_NAME_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

/// Payload bytes of `specs` (0 when they overflow; validate first).
pub fn payload_bytes(specs: &[TensorSpec]) -> u64 {
    validate(specs, "tensors").unwrap_or(0)
}

/// Number of elements over all tensors.
pub fn elements(specs: &[TensorSpec]) -> u64 {
    specs.iter().filter_map(TensorSpec::elements).sum()
}

/// Checks that an update's specs are the model's: same names, order and shapes, with the
/// model's dtype (or i64 when `masked`).
pub fn check_update_specs(
    model: &[TensorSpec],
    update: &[TensorSpec],
    masked: bool,
) -> Result<(), TensorError> {
    if model.len() != update.len() {
        return Err(tensor_error(
            "tensors".into(),
            format!("{} tensors, the model has {}", update.len(), model.len()),
        ));
    }
    for (i, (want, got)) in model.iter().zip(update).enumerate() {
        let want = match masked {
            true => want.with_dtype(Dtype::I64),
            false => want.clone(),
        };
        if want != *got {
            return Err(tensor_error(
                format!("tensors[{i}]"),
                format!("{} expected, {} received", describe(&want), describe(got)),
            ));
        }
    }
    Ok(())
}

/// `name: dtype[d₀, d₁, …]`, for messages.
pub fn describe(spec: &TensorSpec) -> String {
    let dims: Vec<String> = spec.shape.iter().map(u64::to_string).collect();
    format!("{} {:?}[{}]", spec.name, spec.dtype, dims.join(", "))
}

/// f32 values from a little-endian payload (a trailing partial element is ignored).
pub fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// f32 values over their little-endian payload: read in place when the machine is
/// little-endian and the buffer 4-byte aligned (a buffer allocated for f32 values or by the
/// allocator always is), decoded once into a vector of their own otherwise.
#[derive(Debug, Clone)]
pub struct F32Payload {
    bytes: bytes::Bytes,
    decoded: Option<Vec<f32>>,
}

impl F32Payload {
    /// The values of `bytes` (a trailing partial element is ignored).
    pub fn new(bytes: bytes::Bytes) -> Self {
        let whole = bytes.slice(..bytes.len() / 4 * 4);
        let in_place =
            cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, f32>(&whole).is_ok();
        let decoded = (!in_place).then(|| f32_from_le(&whole));
        Self {
            bytes: whole,
            decoded,
        }
    }

    /// `values` as their payload, without a copy on little-endian machines.
    pub fn from_values(values: Vec<f32>) -> Self {
        Self::new(crate::payload::into_le_bytes(values))
    }

    /// The values.
    pub fn values(&self) -> &[f32] {
        match &self.decoded {
            Some(values) => values,
            None => bytemuck::cast_slice(&self.bytes),
        }
    }

    /// The little-endian payload.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }
}

/// Appends `values` to `out` as a little-endian payload.
pub fn f32_extend_le(values: &[f32], out: &mut Vec<u8>) {
    out.reserve(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// `values` as a little-endian payload.
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    f32_extend_le(values, &mut out);
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A model: its specs and every value, flattened in payload order.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Tensors, in payload order.
    pub specs: Vec<TensorSpec>,
    /// Every element of every tensor, concatenated.
    pub values: Vec<f32>,
}

impl Model {
    /// A model from f32 specs and values; fails when the counts disagree or a spec is not f32.
    pub fn new(specs: Vec<TensorSpec>, values: Vec<f32>) -> Result<Self, TensorError> {
        validate(&specs, "tensors")?;
        if let Some(i) = specs.iter().position(|s| s.dtype != Dtype::F32) {
            return Err(tensor_error(format!("tensors[{i}].dtype"), "must be F32"));
        }
        let expected = elements(&specs);
        if values.len() as u64 != expected {
            return Err(tensor_error(
                "values".into(),
                format!("{} values, the specs hold {expected}", values.len()),
            ));
        }
        Ok(Self { specs, values })
    }

    /// Decodes a payload received for `specs`.
    pub fn from_payload(specs: Vec<TensorSpec>, payload: &[u8]) -> Result<Self, TensorError> {
        let expected = payload_bytes(&specs);
        if payload.len() as u64 != expected {
            return Err(tensor_error(
                "payload".into(),
                format!("{} bytes, the specs hold {expected}", payload.len()),
            ));
        }
        Self::new(specs, f32_from_le(payload))
    }

    /// The little-endian payload.
    pub fn payload(&self) -> Vec<u8> {
        f32_to_le(&self.values)
    }

    /// The values of the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        let range = self.range_of(name)?;
        Some(&self.values[range])
    }

    /// The values of the tensor named `name`, mutably.
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let range = self.range_of(name)?;
        Some(&mut self.values[range])
    }

    fn range_of(&self, name: &str) -> Option<std::ops::Range<usize>> {
        let mut start = 0usize;
        for spec in &self.specs {
            let len = spec.elements()? as usize;
            if spec.name == name {
                return Some(start..start + len);
            }
            start += len;
        }
        None
    }
}

impl From<&TensorSpec> for pb::TensorSpec {
    fn from(spec: &TensorSpec) -> Self {
        let dtype = match spec.dtype {
            Dtype::F32 => pb::Dtype::F32,
            Dtype::F16 => pb::Dtype::F16,
            Dtype::Bf16 => pb::Dtype::Bf16,
            Dtype::F64 => pb::Dtype::F64,
            Dtype::I64 => pb::Dtype::I64,
        };
        pb::TensorSpec {
            name: spec.name.clone(),
            dtype: dtype as i32,
            shape: spec.shape.clone(),
        }
    }
}

/// Specs from the wire, naming `field` in errors.
pub fn specs_from_proto(
    specs: &[pb::TensorSpec],
    field: &str,
) -> Result<Vec<TensorSpec>, TensorError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let dtype = match pb::Dtype::try_from(spec.dtype) {
                Ok(pb::Dtype::F32) => Dtype::F32,
                Ok(pb::Dtype::F16) => Dtype::F16,
                Ok(pb::Dtype::Bf16) => Dtype::Bf16,
                Ok(pb::Dtype::F64) => Dtype::F64,
                Ok(pb::Dtype::I64) => Dtype::I64,
                _ => {
                    return Err(tensor_error(
                        format!("{field}[{i}].dtype"),
                        format!("{} is not a dtype", spec.dtype),
                    ))
                }
            };
            Ok(TensorSpec {
                name: spec.name.clone(),
                dtype,
                shape: spec.shape.clone(),
            })
        })
        .collect()
}

/// Specs for the wire.
pub fn specs_to_proto(specs: &[TensorSpec]) -> Vec<pb::TensorSpec> {
    specs.iter().map(pb::TensorSpec::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_payloads_are_read_in_place_when_aligned_and_decoded_otherwise() {
        let values = vec![1.5f32, -2.0, 3.25];
        let payload = F32Payload::from_values(values.clone());
        assert_eq!(payload.values(), &values[..]);
        assert_eq!(payload.bytes().len(), 12);
        assert_eq!(
            payload.values().as_ptr() as *const u8,
            payload.bytes().as_ptr(),
            "read in place"
        );
        let mut shifted = vec![0u8];
        f32_extend_le(&values, &mut shifted);
        shifted.push(7);
        let misaligned = F32Payload::new(bytes::Bytes::from(shifted).slice(1..));
        assert_eq!(
            misaligned.values(),
            &values[..],
            "decoded, partial element ignored"
        );
    }

    fn specs() -> Vec<TensorSpec> {
        vec![TensorSpec::f32("w", &[2, 3]), TensorSpec::f32("b", &[3])]
    }

    #[test]
    fn payload_size_is_the_sum_of_tensor_sizes() {
        assert_eq!(validate(&specs(), "tensors"), Ok(36));
    }

    #[test]
    fn duplicate_names_and_empty_lists_are_refused() {
        let twice = vec![TensorSpec::f32("w", &[1]), TensorSpec::f32("w", &[2])];
        let error = validate(&twice, "initial_model.tensors").unwrap_err();
        assert_eq!(error.field, "initial_model.tensors[1].name");
        assert!(validate(&[], "tensors").is_err());
    }

    #[test]
    fn overflowing_shapes_are_refused() {
        let huge = vec![TensorSpec::f32("w", &[u64::MAX, 2])];
        assert_eq!(validate(&huge, "t").unwrap_err().field, "t[0].shape");
    }

    #[test]
    fn update_specs_must_match_the_model_exactly() {
        let mut wrong = specs();
        wrong[1].shape = vec![4];
        let error = check_update_specs(&specs(), &wrong, false).unwrap_err();
        assert_eq!(error.field, "tensors[1]");
        assert!(error
            .problem
            .contains("b F32[3] expected, b F32[4] received"));
        let masked: Vec<_> = specs().iter().map(|s| s.with_dtype(Dtype::I64)).collect();
        assert!(check_update_specs(&specs(), &masked, true).is_ok());
        assert!(check_update_specs(&specs(), &masked, false).is_err());
    }

    #[test]
    fn models_round_trip_through_their_payload() {
        let model = Model::new(specs(), (0..9).map(|i| i as f32 * 0.5).collect()).unwrap();
        let back = Model::from_payload(specs(), &model.payload()).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.tensor("b"), Some(&[3.0, 3.5, 4.0][..]));
        assert!(Model::from_payload(specs(), &[0; 35]).is_err());
    }
}

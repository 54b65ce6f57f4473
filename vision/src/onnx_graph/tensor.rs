//! ONNX's `TensorProto` as the rewriter sees it: name, dims and type read, the data and every
//! other field kept as the file had it; float32 and float16 values read, new float32, float16
//! and int64 tensors made.

use super::model::GraphError;
use super::wire::{self, Field};

const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_FLOAT_DATA: u32 = 4;
const TENSOR_INT32_DATA: u32 = 5;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i64 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i64 = 7;
/// `TensorProto.DataType.FLOAT16`.
pub const FLOAT16: i64 = 10;

pub(super) fn text(f: &Field<'_>, what: &'static str) -> Result<String, GraphError> {
    f.as_str()
        .map(str::to_owned)
        .ok_or(GraphError::NotText(what))
}

/// A tensor: an initializer or a `Constant`'s value.
#[derive(Debug, Clone)]
pub struct Tensor<'a> {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i64,
    /// The data and everything else.
    fields: Vec<Field<'a>>,
}

impl<'a> Tensor<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<Tensor<'a>, GraphError> {
        let all = wire::parse(bytes)?;
        let dims = wire::repeated_ints(&all, TENSOR_DIMS)?;
        let mut t = Tensor {
            name: String::new(),
            dims,
            data_type: 0,
            fields: Vec::new(),
        };
        for f in all {
            match f.number {
                TENSOR_DIMS => {}
                TENSOR_NAME => t.name = text(&f, "tensor name")?,
                TENSOR_DATA_TYPE => t.data_type = f.as_varint().unwrap_or(0) as i64,
                _ => t.fields.push(f),
            }
        }
        Ok(t)
    }

    /// A tensor of `data_type` whose data is `raw` (little-endian values).
    fn with_raw(name: String, dims: Vec<i64>, data_type: i64, raw: Vec<u8>) -> Tensor<'static> {
        Tensor {
            name,
            dims,
            data_type,
            fields: vec![Field::bytes(TENSOR_RAW_DATA, raw)],
        }
    }

    /// A float tensor stored as raw little-endian data.
    pub fn new_f32(name: String, dims: Vec<i64>, values: &[f32]) -> Tensor<'static> {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::with_raw(name, dims, FLOAT, raw)
    }

    /// An int64 tensor stored as raw little-endian data.
    pub fn new_i64(name: String, dims: Vec<i64>, values: &[i64]) -> Tensor<'static> {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::with_raw(name, dims, INT64, raw)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut fields = Vec::with_capacity(self.fields.len() + 3);
        if !self.dims.is_empty() {
            fields.push(wire::packed_ints(TENSOR_DIMS, &self.dims));
        }
        fields.push(Field::varint(TENSOR_DATA_TYPE, self.data_type as u64));
        fields.push(Field::string(TENSOR_NAME, &self.name));
        fields.extend(self.fields.iter().cloned());
        wire::encode(&fields)
    }

    /// A float16 tensor of these IEEE half-precision bit patterns, stored as raw data.
    pub fn new_f16(name: String, dims: Vec<i64>, bits: &[u16]) -> Tensor<'static> {
        let raw = bits.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::with_raw(name, dims, FLOAT16, raw)
    }

    /// The values of a float16 tensor whose data is in the file (raw, or ONNX's `int32_data`
    /// of bit patterns) and matches its dims, widened to f32 (exactly).
    pub fn f16_values(&self) -> Option<Vec<f32>> {
        if self.data_type != FLOAT16 || self.is_external() {
            return None;
        }
        let values: Vec<f32> = match self.fields.iter().find(|f| f.number == TENSOR_RAW_DATA) {
            Some(f) => {
                let b = f.as_bytes()?;
                if b.len() % 2 != 0 {
                    return None;
                }
                b.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            }
            None => wire::repeated_ints(&self.fields, TENSOR_INT32_DATA)
                .ok()?
                .into_iter()
                .map(|v| u16::try_from(v).ok().map(f16_to_f32))
                .collect::<Option<_>>()?,
        };
        (Some(values.len()) == self.element_count()).then_some(values)
    }

    /// Its data lives in another file.
    pub fn is_external(&self) -> bool {
        self.fields.iter().any(|f| {
            f.number == TENSOR_EXTERNAL_DATA
                || (f.number == TENSOR_DATA_LOCATION && f.as_varint() == Some(1))
        })
    }

    /// The element count its dims say.
    fn element_count(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |n, &d| {
            usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
        })
    }

    /// The values of a float tensor whose data is in the file and matches its dims.
    pub fn f32_values(&self) -> Option<Vec<f32>> {
        if self.data_type != FLOAT || self.is_external() {
            return None;
        }
        let values = match self.fields.iter().find(|f| f.number == TENSOR_RAW_DATA) {
            Some(f) => {
                let b = f.as_bytes()?;
                if b.len() % 4 != 0 {
                    return None;
                }
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            None => wire::repeated_floats(&self.fields, TENSOR_FLOAT_DATA).ok()?,
        };
        (Some(values.len()) == self.element_count()).then_some(values)
    }
}

/// An IEEE 754 half-precision bit pattern as the f32 of the same value (every half is exact
/// in f32): normal, subnormal, zero, infinity and NaN.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = u32::from((bits >> 10) & 0x1f);
    let fraction = u32::from(bits & 0x3ff);
    match exponent {
        // subnormal: fraction · 2⁻²⁴
        0 => sign * fraction as f32 * (1.0 / 16_777_216.0),
        0x1f => {
            let payload = (u32::from(bits & 0x8000) << 16) | 0x7f80_0000 | (fraction << 13);
            f32::from_bits(payload)
        }
        _ => {
            let sign_bit = u32::from(bits & 0x8000) << 16;
            f32::from_bits(sign_bit | ((exponent + 112) << 23) | (fraction << 13))
        }
    }
}

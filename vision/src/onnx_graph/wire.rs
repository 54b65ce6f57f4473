//! The protobuf wire format, as far as ONNX files need it: a message is a list of fields, each a
//! number and a varint, a fixed-size value or a length-delimited run of bytes. Parsing keeps the
//! fields in file order and borrows their bytes, so a message written back without changes is
//! the same bytes, and fields the rewriter does not interpret pass through untouched.

use std::borrow::Cow;

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {msg}")]
pub struct WireError {
    pub offset: usize,
    pub msg: &'static str,
}

/// One field's value by its wire type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(Cow<'a, [u8]>),
    Fixed32(u32),
}

/// A field: its number and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
}

impl<'a> Field<'a> {
    pub fn varint(number: u32, v: u64) -> Field<'static> {
        Field {
            number,
            value: Value::Varint(v),
        }
    }

    pub fn fixed32(number: u32, v: u32) -> Field<'static> {
        Field {
            number,
            value: Value::Fixed32(v),
        }
    }

    pub fn bytes(number: u32, v: Vec<u8>) -> Field<'static> {
        Field {
            number,
            value: Value::Bytes(Cow::Owned(v)),
        }
    }

    pub fn string(number: u32, s: &str) -> Field<'static> {
        Field::bytes(number, s.as_bytes().to_vec())
    }

    /// The bytes of a length-delimited field.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A length-delimited field read as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_varint(&self) -> Option<u64> {
        match self.value {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_fixed32(&self) -> Option<u32> {
        match self.value {
            Value::Fixed32(v) => Some(v),
            _ => None,
        }
    }
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError {
                offset: start,
                msg: "varint runs past the end",
            });
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError {
        offset: start,
        msg: "varint longer than 10 bytes",
    })
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], WireError> {
    let end = pos.checked_add(n).filter(|&e| e <= buf.len());
    let Some(end) = end else {
        return Err(WireError {
            offset: *pos,
            msg: "field runs past the end",
        });
    };
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

/// Splits a message into its fields.
pub fn parse(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let key = read_varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(WireError {
                offset: at,
                msg: "bad field number",
            })?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(buf, &mut pos)?),
            1 => {
                let b = take(buf, &mut pos, 8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            2 => {
                let len = read_varint(buf, &mut pos)?;
                let len = usize::try_from(len).map_err(|_| WireError {
                    offset: at,
                    msg: "length does not fit memory",
                })?;
                Value::Bytes(Cow::Borrowed(take(buf, &mut pos, len)?))
            }
            5 => {
                let b = take(buf, &mut pos, 4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            _ => {
                return Err(WireError {
                    offset: at,
                    msg: "unsupported wire type (groups are not used by ONNX)",
                })
            }
        };
        fields.push(Field { number, value });
    }
    Ok(fields)
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes fields in the order given.
pub fn write(fields: &[Field<'_>], out: &mut Vec<u8>) {
    for f in fields {
        let key = u64::from(f.number) << 3;
        match &f.value {
            Value::Varint(v) => {
                write_varint(key, out);
                write_varint(*v, out);
            }
            Value::Fixed64(v) => {
                write_varint(key | 1, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bytes(b) => {
                write_varint(key | 2, out);
                write_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            Value::Fixed32(v) => {
                write_varint(key | 5, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// The fields as one message's bytes.
pub fn encode(fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    write(fields, &mut out);
    out
}

/// The values of a repeated integer field, packed (one length-delimited field) or not.
pub fn repeated_ints(fields: &[Field<'_>], number: u32) -> Result<Vec<i64>, WireError> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.number == number) {
        match &f.value {
            Value::Varint(v) => out.push(*v as i64),
            Value::Bytes(b) => {
                let mut pos = 0;
                while pos < b.len() {
                    out.push(read_varint(b, &mut pos)? as i64);
                }
            }
            _ => {
                return Err(WireError {
                    offset: 0,
                    msg: "integer field with a fixed-size wire type",
                })
            }
        }
    }
    Ok(out)
}

/// The values of a repeated float field, packed or not.
pub fn repeated_floats(fields: &[Field<'_>], number: u32) -> Result<Vec<f32>, WireError> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.number == number) {
        match &f.value {
            Value::Fixed32(v) => out.push(f32::from_bits(*v)),
            Value::Bytes(b) if b.len() % 4 == 0 => out.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => {
                return Err(WireError {
                    offset: 0,
                    msg: "float field that is neither fixed32 nor packed floats",
                })
            }
        }
    }
    Ok(out)
}

/// A packed repeated integer field.
pub fn packed_ints(number: u32, values: &[i64]) -> Field<'static> {
    let mut b = Vec::new();
    for &v in values {
        write_varint(v as u64, &mut b);
    }
    Field::bytes(number, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_written_back_are_the_same_bytes() {
        let fields = vec![
            Field::varint(1, 300),
            Field::string(2, "conv"),
            Field::fixed32(3, 1.5f32.to_bits()),
            Field {
                number: 4,
                value: Value::Fixed64(7),
            },
            packed_ints(5, &[1, -1, 1 << 40]),
        ];
        let bytes = encode(&fields);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed, fields);
        assert_eq!(encode(&parsed), bytes);
        assert_eq!(repeated_ints(&parsed, 5).unwrap(), vec![1, -1, 1 << 40]);
        assert_eq!(parsed[1].as_str(), Some("conv"));
    }

    #[test]
    fn unpacked_and_packed_repeats_read_alike() {
        let unpacked = [Field::varint(1, 3), Field::varint(1, 4)];
        assert_eq!(repeated_ints(&unpacked, 1).unwrap(), vec![3, 4]);
        let floats = [
            Field::fixed32(4, 2.0f32.to_bits()),
            Field::bytes(
                4,
                [1.0f32, 0.5].iter().flat_map(|f| f.to_le_bytes()).collect(),
            ),
        ];
        assert_eq!(repeated_floats(&floats, 4).unwrap(), vec![2.0, 1.0, 0.5]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = encode(&[Field::string(2, "a long enough name")]);
        for cut in 1..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse(&[0xff; 11]).is_err());
        assert!(parse(&[0x03]).is_err(), "group wire type");
        assert!(parse(&[0x00, 0x01]).is_err(), "field number 0");
    }
}

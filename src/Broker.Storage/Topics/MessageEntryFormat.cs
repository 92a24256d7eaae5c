using System.Buffers.Binary;
using System.Text;
using FASTER.core;

namespace Broker.Storage.Topics;

/// <summary>
/// The on-disk format of one message, one FasterLog entry per message (FasterLog adds length and a per-entry
/// checksum around it). Version 1, little-endian:
/// <code>
///  0  byte   format version (1)
///  1  byte   flags (0, reserved)
///  2  ushort header count
///  4  int    key length
///  8  long   offset
/// 16  long   publish time, Unix milliseconds
/// 24  int    payload length
/// 28  key bytes, then per header: ushort name length, UTF-8 name, int value length, UTF-8 value; then payload
/// </code>
/// A reader refuses a version it does not know instead of guessing.
/// </summary>
internal static class MessageEntryFormat
{
    public const byte Version1 = 1;
    public const int FixedPartLength = 28;

    /// <summary>Most headers one message may carry (the count is stored in 16 bits).</summary>
    public const int MaxHeaders = ushort.MaxValue;

    /// <summary>Encoded size of a message, or -1 when it has more headers, or a longer header name, than the format allows.</summary>
    public static int GetEncodedLength(in AppendMessage message)
    {
        if (message.Headers.Count > MaxHeaders)
            return -1;
        long length = FixedPartLength + (long)message.Key.Length + message.Payload.Length;
        foreach (var header in message.Headers)
        {
            int nameBytes = Encoding.UTF8.GetByteCount(header.Key);
            if (nameBytes > ushort.MaxValue)
                return -1;
            length += 2 + nameBytes + 4 + Encoding.UTF8.GetByteCount(header.Value);
        }
        return length > int.MaxValue ? -1 : (int)length;
    }

    public static void Encode(Span<byte> destination, in AppendMessage message, long offset, long publishTimeUnixMs)
    {
        destination[0] = Version1;
        destination[1] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)message.Headers.Count);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], message.Key.Length);
        BinaryPrimitives.WriteInt64LittleEndian(destination[8..], offset);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], publishTimeUnixMs);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], message.Payload.Length);
        int position = FixedPartLength;
        message.Key.Span.CopyTo(destination[position..]);
        position += message.Key.Length;
        foreach (var header in message.Headers)
        {
            int nameLength = Encoding.UTF8.GetBytes(header.Key, destination[(position + 2)..]);
            BinaryPrimitives.WriteUInt16LittleEndian(destination[position..], (ushort)nameLength);
            position += 2 + nameLength;
            int valueLength = Encoding.UTF8.GetBytes(header.Value, destination[(position + 4)..]);
            BinaryPrimitives.WriteInt32LittleEndian(destination[position..], valueLength);
            position += 4 + valueLength;
        }
        message.Payload.Span.CopyTo(destination[position..]);
    }

    /// <summary>Reads only the offset, for scans that skip acknowledged messages without decoding them.</summary>
    public static bool TryReadOffset(ReadOnlySpan<byte> entry, out long offset)
    {
        offset = 0;
        if (entry.Length < FixedPartLength || entry[0] != Version1)
            return false;
        offset = BinaryPrimitives.ReadInt64LittleEndian(entry[8..]);
        return true;
    }

    /// <summary>Decodes an entry; the result's memory slices <paramref name="entry"/>, which must not be reused.</summary>
    public static bool TryDecode(ReadOnlyMemory<byte> entry, out StoredMessage? message)
    {
        message = null;
        var span = entry.Span;
        if (span.Length < FixedPartLength || span[0] != Version1)
            return false;
        int headerCount = BinaryPrimitives.ReadUInt16LittleEndian(span[2..]);
        int keyLength = BinaryPrimitives.ReadInt32LittleEndian(span[4..]);
        long offset = BinaryPrimitives.ReadInt64LittleEndian(span[8..]);
        long publishTime = BinaryPrimitives.ReadInt64LittleEndian(span[16..]);
        int payloadLength = BinaryPrimitives.ReadInt32LittleEndian(span[24..]);
        int position = FixedPartLength;
        if (keyLength < 0 || keyLength > span.Length - position)
            return false;
        var key = entry.Slice(position, keyLength);
        position += keyLength;
        var headers = headerCount == 0 ? [] : new KeyValuePair<string, string>[headerCount];
        for (int i = 0; i < headerCount; i++)
        {
            if (span.Length - position < 2)
                return false;
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(span[position..]);
            position += 2;
            if (span.Length - position < nameLength + 4)
                return false;
            string name = Encoding.UTF8.GetString(span.Slice(position, nameLength));
            position += nameLength;
            int valueLength = BinaryPrimitives.ReadInt32LittleEndian(span[position..]);
            position += 4;
            if (valueLength < 0 || valueLength > span.Length - position)
                return false;
            headers[i] = new(name, Encoding.UTF8.GetString(span.Slice(position, valueLength)));
            position += valueLength;
        }
        if (payloadLength != span.Length - position)
            return false;
        message = new StoredMessage(offset, publishTime, key, headers, entry.Slice(position, payloadLength));
        return true;
    }
}

/// <summary>Serializes one message straight into FasterLog's page, with no intermediate buffer.</summary>
internal readonly struct MessageLogEntry(AppendMessage message, int encodedLength, long offset, long publishTimeUnixMs)
    : ILogEnqueueEntry
{
    public int SerializedLength => encodedLength;

    public void SerializeTo(Span<byte> dest) => MessageEntryFormat.Encode(dest, message, offset, publishTimeUnixMs);
}

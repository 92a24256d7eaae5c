using System.Buffers.Binary;
using System.Text;
using FASTER.core;

namespace Broker.Storage.Topics;

/// <summary>
/// The on-disk format of one message, one FasterLog entry per message (FasterLog adds length and a per-entry
/// checksum around it). Version 1, little-endian:
/// <code>
///  0  byte   format version (1)
///  1  byte   flags: 0 a plain message; 1 a scheduled record (held until its time, never delivered itself);
///            2 the due copy of a scheduled record (delivered like a plain message)
///  2  ushort header count
///  4  int    key length
///  8  long   offset
/// 16  long   append time, Unix milliseconds (the publish time, except for a due copy: when it became due)
/// 24  int    payload length
/// 28  schedule extension, by flags: 1 → long deliver-at; 2 → long record offset, long publish time, long deliver-at
///     then key bytes, then per header: ushort name length, UTF-8 name, int value length, UTF-8 value; then payload
/// </code>
/// A reader refuses a version or flag it does not know instead of guessing (entries written before scheduling existed
/// all have flags 0).
/// </summary>
internal static class MessageEntryFormat
{
    public const byte Version1 = 1;
    public const int FixedPartLength = 28;

    /// <summary>Flags byte values: what kind of entry this is (see the class summary).</summary>
    public const byte PlainMessage = 0, ScheduledRecord = 1, DueCopy = 2;

    /// <summary>Most headers one message may carry (the count is stored in 16 bits).</summary>
    public const int MaxHeaders = ushort.MaxValue;

    /// <summary>Bytes of the schedule extension an entry of this kind carries.</summary>
    public static int ExtensionLength(byte kind) => kind switch { ScheduledRecord => 8, DueCopy => 24, _ => 0 };

    /// <summary>
    /// Encoded size of a message of kind <paramref name="kind"/>, or -1 when it has more headers, or a longer header
    /// name, than the format allows.
    /// </summary>
    public static int GetEncodedLength(in AppendMessage message, byte kind = PlainMessage)
    {
        if (message.Headers.Count > MaxHeaders)
            return -1;
        long length = FixedPartLength + ExtensionLength(kind) + (long)message.Key.Length + message.Payload.Length;
        // Indexed, not foreach: an enumerator of an IReadOnlyList is an allocation per message.
        var headers = message.Headers;
        for (int i = 0; i < headers.Count; i++)
        {
            var header = headers[i];
            int nameBytes = Encoding.UTF8.GetByteCount(header.Key);
            if (nameBytes > ushort.MaxValue)
                return -1;
            length += 2 + nameBytes + 4 + Encoding.UTF8.GetByteCount(header.Value);
        }
        return length > int.MaxValue ? -1 : (int)length;
    }

    public static void Encode(Span<byte> destination, in AppendMessage message, in EntrySchedule schedule, long offset, long appendTimeUnixMs)
    {
        destination[0] = Version1;
        destination[1] = schedule.Kind;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)message.Headers.Count);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], message.Key.Length);
        BinaryPrimitives.WriteInt64LittleEndian(destination[8..], offset);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], appendTimeUnixMs);
        BinaryPrimitives.WriteInt32LittleEndian(destination[24..], message.Payload.Length);
        int position = FixedPartLength;
        if (schedule.Kind == ScheduledRecord)
        {
            BinaryPrimitives.WriteInt64LittleEndian(destination[position..], schedule.DeliverAtUnixMs);
        }
        else if (schedule.Kind == DueCopy)
        {
            BinaryPrimitives.WriteInt64LittleEndian(destination[position..], schedule.RecordOffset);
            BinaryPrimitives.WriteInt64LittleEndian(destination[(position + 8)..], schedule.PublishTimeUnixMs);
            BinaryPrimitives.WriteInt64LittleEndian(destination[(position + 16)..], schedule.DeliverAtUnixMs);
        }
        position += ExtensionLength(schedule.Kind);
        message.Key.Span.CopyTo(destination[position..]);
        position += message.Key.Length;
        var headers = message.Headers;
        for (int i = 0; i < headers.Count; i++)
        {
            var header = headers[i];
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

    /// <summary>Reads only the key of an entry (an ordered group's reader needs it before deciding to deliver).</summary>
    public static bool TryReadKey(ReadOnlySpan<byte> entry, out ReadOnlySpan<byte> key)
    {
        key = default;
        if (entry.Length < FixedPartLength || entry[0] != Version1)
            return false;
        int start = FixedPartLength + ExtensionLength(entry[1]);
        int length = BinaryPrimitives.ReadInt32LittleEndian(entry[4..]);
        if (length < 0 || start > entry.Length || length > entry.Length - start)
            return false;
        key = entry.Slice(start, length);
        return true;
    }

    /// <summary>True for a scheduled record: an entry that holds a message until its time and is never delivered itself.</summary>
    public static bool IsScheduledRecord(ReadOnlySpan<byte> entry) => entry.Length > 1 && entry[1] == ScheduledRecord;

    /// <summary>
    /// Reads only the schedule of an entry (for the scan that rebuilds the schedule after a restart): its kind, its
    /// deliver-at time, and for a due copy the offset of the record it came from.
    /// </summary>
    public static bool TryReadSchedule(ReadOnlySpan<byte> entry, out long offset, out EntrySchedule schedule)
    {
        schedule = EntrySchedule.None;
        if (!TryReadOffset(entry, out offset) || entry.Length < FixedPartLength + ExtensionLength(entry[1]))
            return false;
        var extension = entry[FixedPartLength..];
        schedule = entry[1] switch
        {
            PlainMessage => EntrySchedule.None,
            ScheduledRecord => EntrySchedule.Record(BinaryPrimitives.ReadInt64LittleEndian(extension)),
            DueCopy => EntrySchedule.Copy(BinaryPrimitives.ReadInt64LittleEndian(extension),
                BinaryPrimitives.ReadInt64LittleEndian(extension[8..]), BinaryPrimitives.ReadInt64LittleEndian(extension[16..])),
            _ => EntrySchedule.Unknown,
        };
        return schedule.Kind != EntrySchedule.Unknown.Kind;
    }

    // The broker's own header names come back as their constants: one string fewer per message that carries them.
    private static string HeaderName(ReadOnlySpan<byte> name) =>
        name.SequenceEqual(ReservedHeaders.MessageIdUtf8) ? ReservedHeaders.MessageId
        : name.SequenceEqual(ReservedHeaders.PriorityUtf8) ? ReservedHeaders.Priority
        : Encoding.UTF8.GetString(name);

    /// <summary>
    /// The value of the first header named <paramref name="name"/> (UTF-8 bytes), without decoding the message; false
    /// when there is none or the entry is malformed.
    /// </summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> entry, ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        value = default;
        if (!TryReadKey(entry, out var key))
            return false;
        int headerCount = BinaryPrimitives.ReadUInt16LittleEndian(entry[2..]);
        int position = FixedPartLength + ExtensionLength(entry[1]) + key.Length;
        for (int i = 0; i < headerCount; i++)
        {
            if (entry.Length - position < 2)
                return false;
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(entry[position..]);
            position += 2;
            if (entry.Length - position < nameLength + 4)
                return false;
            var current = entry.Slice(position, nameLength);
            position += nameLength;
            int valueLength = BinaryPrimitives.ReadInt32LittleEndian(entry[position..]);
            position += 4;
            if (valueLength < 0 || valueLength > entry.Length - position)
                return false;
            if (current.SequenceEqual(name))
            {
                value = entry.Slice(position, valueLength);
                return true;
            }
            position += valueLength;
        }
        return false;
    }

    /// <summary>Decodes an entry; the result's memory slices <paramref name="entry"/>, which must not be reused.</summary>
    public static bool TryDecode(ReadOnlyMemory<byte> entry, out StoredMessage? message)
    {
        message = null;
        var span = entry.Span;
        if (!TryReadSchedule(span, out long offset, out var schedule))
            return false;
        int headerCount = BinaryPrimitives.ReadUInt16LittleEndian(span[2..]);
        int keyLength = BinaryPrimitives.ReadInt32LittleEndian(span[4..]);
        long appendTime = BinaryPrimitives.ReadInt64LittleEndian(span[16..]);
        int payloadLength = BinaryPrimitives.ReadInt32LittleEndian(span[24..]);
        int position = FixedPartLength + ExtensionLength(schedule.Kind);
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
            string name = HeaderName(span.Slice(position, nameLength));
            position += nameLength;
            int valueLength = BinaryPrimitives.ReadInt32LittleEndian(span[position..]);
            position += 4;
            if (valueLength < 0 || valueLength > span.Length - position)
                return false;
            var value = span.Slice(position, valueLength);
            headers[i] = new(name, ReferenceEquals(name, ReservedHeaders.Priority) ? ReservedHeaders.PriorityText(value) : Encoding.UTF8.GetString(value));
            position += valueLength;
        }
        if (payloadLength != span.Length - position)
            return false;
        message = schedule.Kind switch
        {
            ScheduledRecord => new StoredMessage(offset, appendTime, key, headers, entry.Slice(position, payloadLength))
            {
                AppendTimeUnixMs = appendTime, Schedule = new MessageSchedule(schedule.DeliverAtUnixMs, offset),
            },
            DueCopy => new StoredMessage(offset, schedule.PublishTimeUnixMs, key, headers, entry.Slice(position, payloadLength))
            {
                AppendTimeUnixMs = appendTime, Schedule = new MessageSchedule(schedule.DeliverAtUnixMs, schedule.RecordOffset),
            },
            _ => new StoredMessage(offset, appendTime, key, headers, entry.Slice(position, payloadLength)) { AppendTimeUnixMs = appendTime },
        };
        return true;
    }
}

/// <summary>
/// The schedule part of an entry: its kind (plain, scheduled record, due copy), the deliver-at time, and for a due copy
/// the record it came from and that record's publish time.
/// </summary>
internal readonly record struct EntrySchedule(byte Kind, long DeliverAtUnixMs, long RecordOffset, long PublishTimeUnixMs)
{
    public static readonly EntrySchedule None = new(MessageEntryFormat.PlainMessage, 0, 0, 0);
    public static readonly EntrySchedule Unknown = new(byte.MaxValue, 0, 0, 0);

    public static EntrySchedule Record(long deliverAtUnixMs) => new(MessageEntryFormat.ScheduledRecord, deliverAtUnixMs, 0, 0);

    public static EntrySchedule Copy(long recordOffset, long publishTimeUnixMs, long deliverAtUnixMs) =>
        new(MessageEntryFormat.DueCopy, deliverAtUnixMs, recordOffset, publishTimeUnixMs);
}

/// <summary>Serializes one message straight into FasterLog's page, with no intermediate buffer.</summary>
internal readonly struct MessageLogEntry(AppendMessage message, EntrySchedule schedule, int encodedLength, long offset, long appendTimeUnixMs)
    : ILogEnqueueEntry
{
    public int SerializedLength => encodedLength;

    public void SerializeTo(Span<byte> dest) => MessageEntryFormat.Encode(dest, message, schedule, offset, appendTimeUnixMs);
}

using System.Buffers;
using System.Buffers.Binary;
using FASTER.core;

namespace Broker.Storage.Logs;

/// <summary>
/// How an entry larger than one FasterLog page is stored: as consecutive fragment entries, so the page size (the
/// memory each log keeps) does not have to grow with the largest message. Fragments are enqueued under the append
/// lock in one go, and no commit splits an append, so a reader sees all of them or none.
/// <code>
/// head:         byte 0xF0, int total length, first bytes of the entry
/// continuation: byte 0xF1, next bytes of the entry
/// </code>
/// Whole entries never start with these bytes (message entries start with their format version, group-state
/// records with their kind, both small numbers).
/// </summary>
internal static class EntryFragments
{
    public const byte HeadMarker = 0xF0;
    public const byte ContinuationMarker = 0xF1;
    public const int HeadOverhead = 5;
    public const int ContinuationOverhead = 1;

    public static bool IsHead(ReadOnlySpan<byte> entry) => entry.Length >= HeadOverhead && entry[0] == HeadMarker;

    public static bool IsContinuation(ReadOnlySpan<byte> entry) => entry.Length >= ContinuationOverhead && entry[0] == ContinuationMarker;

    /// <summary>Total length of the entry a head fragment starts.</summary>
    public static int TotalLength(ReadOnlySpan<byte> head) => BinaryPrimitives.ReadInt32LittleEndian(head[1..]);

    /// <summary>
    /// Serializes <paramref name="entry"/> and enqueues it as fragments of at most <paramref name="maxEntryBytes"/>
    /// each; returns the head's address.
    /// </summary>
    public static long EnqueueFragmented<T>(AppendScope scope, T entry, int maxEntryBytes) where T : ILogEnqueueEntry
    {
        int total = entry.SerializedLength;
        byte[] whole = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            entry.SerializeTo(whole.AsSpan(0, total));
            int headBytes = Math.Min(total, maxEntryBytes - HeadOverhead);
            long address = scope.EnqueueWhole(new Fragment(whole, 0, headBytes, total));
            for (int position = headBytes; position < total;)
            {
                int count = Math.Min(total - position, maxEntryBytes - ContinuationOverhead);
                scope.EnqueueWhole(new Fragment(whole, position, count, -1));
                position += count;
            }
            return address;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(whole);
        }
    }

    /// <summary>One fragment: a head when <paramref name="total"/> is not negative, else a continuation.</summary>
    private readonly struct Fragment(byte[] source, int offset, int count, int total) : ILogEnqueueEntry
    {
        public int SerializedLength => count + (total >= 0 ? HeadOverhead : ContinuationOverhead);

        public void SerializeTo(Span<byte> dest)
        {
            if (total >= 0)
            {
                dest[0] = HeadMarker;
                BinaryPrimitives.WriteInt32LittleEndian(dest[1..], total);
                source.AsSpan(offset, count).CopyTo(dest[HeadOverhead..]);
            }
            else
            {
                dest[0] = ContinuationMarker;
                source.AsSpan(offset, count).CopyTo(dest[ContinuationOverhead..]);
            }
        }
    }
}

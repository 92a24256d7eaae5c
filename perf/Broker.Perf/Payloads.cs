using System.Buffers.Binary;
using System.Diagnostics;

namespace Broker.Perf;

/// <summary>
/// A perf message: 8 bytes of send time (Stopwatch ticks: one monotonic clock for the whole machine), 8 bytes of
/// message index, then filler up to the payload size.
/// </summary>
internal static class Payloads
{
    public const int HeaderBytes = 16;

    public static byte[] Create(long index, int size, long sendTimestamp)
    {
        var payload = new byte[Math.Max(size, HeaderBytes)];
        BinaryPrimitives.WriteInt64LittleEndian(payload, sendTimestamp);
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(8), index);
        for (int i = HeaderBytes; i < payload.Length; i++)
            payload[i] = (byte)(index + i);
        return payload;
    }

    public static (long SendTimestamp, long Index) Read(ReadOnlySpan<byte> payload) =>
        (BinaryPrimitives.ReadInt64LittleEndian(payload), BinaryPrimitives.ReadInt64LittleEndian(payload[8..]));

    public static long Now() => Stopwatch.GetTimestamp();
}

using System.Text;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class MessageEntryFormatTests
{
    [Fact]
    public void A_message_with_key_headers_and_payload_round_trips()
    {
        var message = new AppendMessage(
            Encoding.UTF8.GetBytes("job-42"),
            [new("content-type", "application/json"), new("trace", "ünïcødé ✓")],
            Encoding.UTF8.GetBytes("{\"url\":\"https://example.com\"}"));
        byte[] buffer = Encode(message, offset: 1234, time: 1_700_000_000_123);

        Assert.True(MessageEntryFormat.TryDecode(buffer, out var decoded));
        Assert.Equal(1234, decoded!.Offset);
        Assert.Equal(1_700_000_000_123, decoded.PublishTimeUnixMs);
        Assert.Equal("job-42", Encoding.UTF8.GetString(decoded.Key.Span));
        Assert.Equal(message.Headers, decoded.Headers);
        Assert.Equal(message.Payload.ToArray(), decoded.Payload.ToArray());
        Assert.True(MessageEntryFormat.TryReadOffset(buffer, out long offset));
        Assert.Equal(1234, offset);
    }

    [Theory]
    [InlineData("0", true)]
    [InlineData("7", true)]
    [InlineData("255", true)]
    [InlineData("007", false)]
    [InlineData("256", false)]
    [InlineData("x", false)]
    public void A_priority_header_reads_back_as_written_and_a_canonical_value_as_a_shared_string(string value, bool shared)
    {
        // Stored by a trusted writer (a redrive copies headers as they are): whatever the bytes, they read back unchanged.
        byte[] buffer = Encode(new AppendMessage(ReadOnlyMemory<byte>.Empty, [new(ReservedHeaders.Priority, value)], ReadOnlyMemory<byte>.Empty), offset: 1, time: 1);
        Assert.True(MessageEntryFormat.TryDecode(buffer, out var first));
        Assert.True(MessageEntryFormat.TryDecode(buffer, out var second));
        Assert.Equal(value, first!.Headers[0].Value);
        Assert.Equal(shared, ReferenceEquals(first.Headers[0].Value, second!.Headers[0].Value));
    }

    [Fact]
    public void An_empty_message_round_trips()
    {
        byte[] buffer = Encode(AppendMessage.FromPayload(ReadOnlyMemory<byte>.Empty), offset: 0, time: 0);

        Assert.True(MessageEntryFormat.TryDecode(buffer, out var decoded));
        Assert.True(decoded!.Key.IsEmpty);
        Assert.True(decoded.Payload.IsEmpty);
        Assert.Empty(decoded.Headers);
    }

    [Fact]
    public void Truncated_or_unknown_version_entries_are_refused()
    {
        byte[] buffer = Encode(new AppendMessage(new byte[] { 1, 2 }, [new("h", "v")], new byte[] { 3, 4, 5 }), 7, 8);

        for (int length = 0; length < buffer.Length; length++)
            Assert.False(MessageEntryFormat.TryDecode(buffer.AsMemory(0, length), out _), $"accepted a prefix of {length} bytes");
        buffer[0] = 99;
        Assert.False(MessageEntryFormat.TryDecode(buffer, out _));
    }

    [Fact]
    public void Scheduled_records_and_due_copies_round_trip_with_their_schedule_and_unknown_kinds_are_refused()
    {
        var message = new AppendMessage(new byte[] { 1 }, [new("h", "v")], new byte[] { 2, 3 });
        byte[] record = Encode(message, 5, 1_000, EntrySchedule.Record(9_000));
        byte[] copy = Encode(message, 8, 9_001, EntrySchedule.Copy(5, 1_000, 9_000));

        Assert.True(MessageEntryFormat.IsScheduledRecord(record));
        Assert.False(MessageEntryFormat.IsScheduledRecord(copy));
        Assert.True(MessageEntryFormat.TryDecode(record, out var decodedRecord));
        Assert.True(decodedRecord!.IsScheduledRecord);
        Assert.Equal((new MessageSchedule(9_000, 5), 1_000L, 1_000L), (decodedRecord.Schedule, decodedRecord.PublishTimeUnixMs, decodedRecord.AppendTimeUnixMs));
        Assert.True(MessageEntryFormat.TryDecode(copy, out var decodedCopy));
        Assert.False(decodedCopy!.IsScheduledRecord);
        // The copy keeps the publish time people see; retention goes by when it was appended.
        Assert.Equal((new MessageSchedule(9_000, 5), 1_000L, 9_001L), (decodedCopy.Schedule, decodedCopy.PublishTimeUnixMs, decodedCopy.AppendTimeUnixMs));
        Assert.Equal([(byte)2, 3], decodedCopy.Payload.ToArray());
        Assert.True(MessageEntryFormat.TryReadSchedule(copy, out long offset, out var schedule));
        Assert.Equal((8L, EntrySchedule.Copy(5, 1_000, 9_000)), (offset, schedule));

        copy[1] = 7;
        Assert.False(MessageEntryFormat.TryDecode(copy, out _));
    }

    private static byte[] Encode(AppendMessage message, long offset, long time, EntrySchedule? schedule = null)
    {
        var kind = schedule ?? EntrySchedule.None;
        var buffer = new byte[MessageEntryFormat.GetEncodedLength(message, kind.Kind)];
        MessageEntryFormat.Encode(buffer, message, kind, offset, time);
        return buffer;
    }
}

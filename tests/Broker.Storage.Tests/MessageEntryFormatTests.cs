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

    private static byte[] Encode(AppendMessage message, long offset, long time)
    {
        var buffer = new byte[MessageEntryFormat.GetEncodedLength(message)];
        MessageEntryFormat.Encode(buffer, message, offset, time);
        return buffer;
    }
}

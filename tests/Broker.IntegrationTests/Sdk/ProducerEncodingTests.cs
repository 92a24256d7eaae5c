using Broker.Client;
using Broker.Protocol.V1;
using Google.Protobuf;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// The producer writes a plain message (a key and a payload) without a protobuf <see cref="Message"/>: its bytes must be
/// protobuf's, byte for byte, around every varint length boundary.
/// </summary>
public sealed class ProducerEncodingTests
{
    [Theory]
    [InlineData(0, 0)]
    [InlineData(0, 1)]
    [InlineData(3, 0)]
    [InlineData(5, 127)]
    [InlineData(1, 128)]
    [InlineData(127, 16_383)]
    [InlineData(200, 16_384)]
    [InlineData(0, 1_048_576)]
    public void A_plain_message_is_encoded_as_protobuf_encodes_it(int keyBytes, int payloadBytes)
    {
        var random = new Random(keyBytes * 31 + payloadBytes);
        var key = new byte[keyBytes];
        var payload = new byte[payloadBytes];
        random.NextBytes(key);
        random.NextBytes(payload);
        var message = new Message { Key = ByteString.CopyFrom(key), Payload = ByteString.CopyFrom(payload) };
        var plain = new ProducerBatch("items", 0, 0);
        var generated = new ProducerBatch("items", 0, 0);

        plain.Append(new OutgoingBytes(key, payload));
        plain.Append(new OutgoingBytes(key, payload));
        generated.Append(new OutgoingBytes(message));
        generated.Append(new OutgoingBytes(message));

        Assert.Equal(generated.Body.ToArray(), plain.Body.ToArray());
        var request = PublishRequest.Parser.ParseFrom(plain.Body.Span);
        Assert.Equal("items", request.Topic);
        Assert.Equal(2, request.Messages.Count);
        Assert.All(request.Messages, m => Assert.Equal(message, m));
        plain.ReturnBuffer();
        generated.ReturnBuffer();
    }
}

using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Requests no gRPC client would send (bytes that are not protobuf, truncated or oversized frames, unknown flags),
/// sent as raw HTTP/2 to unary and streaming methods: each gets INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a broker
/// error code, the broker logs no error, keeps serving, and what was published before is intact.
/// </summary>
public sealed class MalformedRequestTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private const string Publish = "/broker.v1.Publisher/Publish";
    private const string PublishStream = "/broker.v1.Publisher/PublishStream";
    private const string Consume = "/broker.v1.Consumer/Consume";
    private const string CreateTopic = "/broker.v1.Admin/CreateTopic";

    private static readonly byte[] NotProtobuf = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];

    public static TheoryData<string> Methods => new() { Publish, PublishStream, Consume, CreateTopic };

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task A_message_that_is_not_protobuf_is_invalid_argument(string method) =>
        await AssertRefusedAsync(method, RawGrpc.Frame(NotProtobuf), StatusCode.InvalidArgument, "1000");

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task A_truncated_frame_is_invalid_argument(string method) =>
        await AssertRefusedAsync(method, RawGrpc.Frame(new byte[10], declaredLength: 100), StatusCode.InvalidArgument, "1000");

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task Half_a_frame_header_is_invalid_argument(string method) =>
        await AssertRefusedAsync(method, [0, 0, 0], StatusCode.InvalidArgument, "1000");

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task An_unknown_compressed_flag_is_invalid_argument(string method) =>
        await AssertRefusedAsync(method, RawGrpc.Frame(new byte[4], flag: 7), StatusCode.InvalidArgument, "1000");

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task A_compressed_frame_without_an_encoding_is_invalid_argument(string method) =>
        await AssertRefusedAsync(method, RawGrpc.Frame(new byte[4], flag: 1), StatusCode.InvalidArgument, "1000");

    [Theory]
    [MemberData(nameof(Methods))]
    public async Task A_frame_longer_than_MaxRequestBytes_is_resource_exhausted_with_its_code(string method) =>
        await AssertRefusedAsync(method, RawGrpc.Frame([], declaredLength: (64u << 20) + 1), StatusCode.ResourceExhausted, "1008");

    [Fact]
    public async Task An_empty_unary_body_is_invalid_argument() =>
        await AssertRefusedAsync(Publish, [], StatusCode.InvalidArgument, "1000");

    [Fact]
    public async Task Data_after_a_unary_message_is_invalid_argument()
    {
        string topic = await shared.NewTopicAsync();
        var frame = RawGrpc.Frame(new PublishRequest { Topic = topic, Messages = { new Message() } });
        await AssertRefusedAsync(Publish, [.. frame, .. frame], StatusCode.InvalidArgument, "1000");
        Assert.Equal(0UL, (await shared.Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task Random_bytes_as_a_publish_are_refused_with_a_status_every_time()
    {
        var random = new Random(1234);
        for (int i = 0; i < 50; i++)
        {
            var message = new byte[random.Next(1, 200)];
            random.NextBytes(message);
            var answer = await RawGrpc.CallAsync(shared.Broker.Host.Address, Publish, RawGrpc.Frame(message));
            // Random bytes can happen to parse (unknown fields are skipped): then the request lacks a topic, or names one
            // that does not exist. Either way a clear status with an error code, never UNKNOWN or INTERNAL.
            Assert.True(answer.Status is StatusCode.InvalidArgument or StatusCode.NotFound, $"{answer.Status}: {answer.Message}");
            Assert.NotNull(answer.ErrorCode);
        }
        Assert.Empty(shared.Broker.Logs.Errors);
    }

    [Fact]
    public async Task A_request_over_MaxRequestBytes_from_the_real_client_carries_its_code()
    {
        await using var broker = await TestBroker.StartAsync(options =>
        {
            options.MaxMessageBytes = 1024;
            options.MaxRequestBytes = 64 << 10;
        });
        await broker.Client.CreateTopicAsync("t");
        var batch = Enumerable.Range(0, 100).Select(_ => new OutgoingMessage(new byte[1000])).ToList();

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.PublishAsync("t", batch));

        Assert.Equal(StatusCode.ResourceExhausted, error.Status);
        Assert.Equal(1008, error.ErrorCode);
        Assert.Equal(0, (await broker.Client.PublishAsync("t", batch.Take(10))).FirstOffset);
        Assert.Empty(broker.Logs.Errors);
    }

    private async Task AssertRefusedAsync(string method, byte[] body, StatusCode status, string code)
    {
        string topic = await shared.NewTopicAsync();
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("before")]);

        var answer = await RawGrpc.CallAsync(shared.Broker.Host.Address, method, body);

        Assert.Equal(status, answer.Status);
        Assert.Equal(code, answer.ErrorCode);
        Assert.False(string.IsNullOrWhiteSpace(answer.Message));
        Assert.Empty(shared.Broker.Logs.Errors);
        // Still serving, and what was there is intact.
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("after")]);
        var messages = await TopicReader.ReadAllAsync(shared.Client, topic, 2);
        Assert.Equal(["before", "after"], messages.Select(m => m.PayloadText));
    }
}

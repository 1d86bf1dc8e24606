"""Word lists for detecting Chinese personal names and addresses in free text.

Data only. The surname list covers the common single-character surnames (the 百家姓 entries
still in use plus the most frequent in the 2020 census); together they cover well over 95 % of
the population. Compound surnames are listed separately because a name starting with one has
a two-character surname (欧阳娜娜 is 欧阳 + 娜娜).
"""

from __future__ import annotations

SINGLE_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞"
    "左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕"
    "屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧"
    "闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥"
    "南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅屠豆朴盖练廉禹井祖漆巴丰支"
    "卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修邰赫杭况那宿鲜印"
    "逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由"
    "傅阎步洪萧赖凤邴汲糜谯铁习蓟郦郗钮"
    # rarer surnames still borne by thousands (2020 census tail, Cantonese and northern names)
    "禤蒯訾仉厍逄笪麴隗璩佴钭莘缑酆暨郄睢蹇濮琚隽銮甯铎蔚綦幺闾蒉庹贠雒荀鄂蒿佀郏韶汝弓滑牧"
    "禚靖隰巢邗琴乜桓芈戢"
)

COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文",
    "司徒", "夏侯", "令狐", "轩辕", "端木", "独孤", "南宫", "西门", "百里", "呼延", "申屠",
    "太史", "闻人", "万俟", "澹台", "公冶", "宗政", "濮阳", "淳于", "单于", "赫连", "钟离",
    "第五", "拓跋", "东郭", "南门", "梁丘", "左丘", "公羊", "谷梁", "羊舌", "微生", "乐正", "司空",
    "亓官", "巫马", "鲜于", "仲孙", "颛孙", "壤驷", "公良", "漆雕", "宰父", "夹谷", "段干", "东门",
    "司寇", "公西", "叱干", "贺兰", "完颜", "爱新觉罗", "叶赫那拉",
)

# Words that introduce a person right after them: 患者王某, 家属：李四, 主治医生张敏华.
NAME_BEFORE = (
    "患者", "病人", "病患", "患儿", "家属", "丈夫", "妻子", "爱人", "儿子", "女儿", "父亲", "母亲",
    "之父", "之母", "监护人", "联系人", "陪同人", "陪护", "姓名", "签名", "签字", "医生", "医师",
    "大夫", "主任", "护士", "护师", "主治医生", "主治医师", "主管医生", "责任护士", "经治医生",
    "接诊医生", "会诊医生", "主诊医生", "上级医师", "住院医师", "代理人", "委托人", "申请人",
    "主任医师", "副主任医师", "主治", "记录医师", "记录者", "报告人", "审核人", "送检医生",
)

# Surnames that are also everyday function words (于昨日, 由医生, 和家属, 向患者): a name
# starting with one is only taken where a context word anchors its start (患者于某某), never
# from the words after it alone.
FUNCTION_SURNAMES = "于和由向时但都来那应相初门云平计国全原南海花强满位区盘楼皮乐从将把在以及与同当经"

# Words that follow a name: 王小明先生, 韩雪梅医生, 白雅宁是一位…, 施明远，53岁.
NAME_AFTER = (
    "先生", "女士", "小姐", "医生", "医师", "大夫", "主任", "护士", "护师", "教授", "老师",
    "同志", "患者", "本人", "家属", "之妻", "之夫", "之子", "之女", "之父", "之母", "是一位",
    "是一名", "为一名", "副主任", "主任医师", "主治医师", "，男", "，女", ",男", ",女", "（男",
    "（女", "(男", "(女", "博士", "，一位", "，现年", "，今年", "，患者", "，职业", "，从事",
)

# Characters that do not occur inside a given name in running text but often follow one
# (verbs, prepositions, particles). Keeping them out of the given-name class stops
# "患者王伟于昨日入院" from swallowing 于.
NOT_IN_GIVEN_NAME = (
    "于因在的是和与及为自今出入诉主因被由从向对将把已曾现等所之其他她它我你们年月日岁男女性副"
    "经近目最已还也都很并或即请见行给让使做有无不未个这那某住醉陪房议知签本"
    "先生士医师护患者病院科室号路街市省区县镇村说称述示诊治疗服用药检查术后前次时，。、"
)

# Provinces and province-level units: the anchor of a full postal address.
PROVINCES = (
    "北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏", "浙江",
    "安徽", "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州",
    "云南", "陕西", "甘肃", "青海", "台湾", "内蒙古", "广西", "西藏", "宁夏", "新疆", "香港",
    "澳门",
)

# Characters that end the words before an address (现居住于, 家住, 地址为): an address never
# starts with them, so extending an address backwards stops there.
NOT_IN_ADDRESS = (
    "于在住居址为是的与及或至到从向往现其他她我你们系籍位处：:，,。；;、 （）()\"'“”"
    "患者病男女岁名叫姓电话手机邮箱"
)

# Surrogate given-name characters for pseudonyms: common, gender-neutral, no rare glyphs.
SURROGATE_GIVEN = (
    "安宁子文嘉佳明华晓立俊思雨欣悦宇航昊晨若涵一诺家乐瑞泽书杰志远海涛建平春秋云峰博语"
)
SURROGATE_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"

# Clinical words that start with a character that is also a surname (安返, 查体, 康复, 平素,
# 黄疸, 门诊, 麻醉…). A name is never read where one of them starts (患者安返病房 keeps
# 安返; 主任医师查体 keeps 查体), and a given name ends where one starts (王伟高血压).
CLINICAL_WORDS = tuple("""
张力 张口 张开 陈旧 陈旧性 黄疸 黄染 黄色 黄体 黄体酮 周围 周身 周期 周后 周内 周前 周岁 徐缓
马来酸 马尾 高血压 高热 高度 高危 高脂 高脂血症 高糖 高钾 高钠 高血糖 高于 高频 高压 高级
高流量 高敏 高分辨 罗红霉素 唐氏 许可 曾经 曾有 曾于 曾行 曾因 曾在 曾服 曾诊 余下 余同前 余无
余未 杜冷丁 叶酸 程度 程序 苏醒 丁卡因 任何 任意 陆续 范围 金属 金黄色 金葡菌 石膏 付费 方案
方可 方式 方向 方法 方便 白细胞 白蛋白 白色 白天 白内障 白癜风 雷贝拉唑 雷尼替丁 黎明 顾虑 毛细
毛发 毛囊 万古霉素 严重 严密 严格 严禁 戴用 孔径 向上 向下 向左 向右 向外 向内 汤剂 常规 常见
常用 常有 常温 常伴 温度 温水 温和 康复 康复科 康复医学科 施行 文件 文化 牛奶 葛根 安返 安静
安全 安眠 安定 安慰 安排 安置 安好 安返病房 齐全 易感 易于 易怒 易疲劳 颜面 颜色 申请 关节
关注 关于 关闭 兰索拉唑 焦虑 左侧 左上 左下 左心 左肺 左肾 左手 左足 左眼 左室 左房 左右 左旋
柳氮磺吡啶 甘油 甘露醇 甘草 包括 包扎 包块 包膜 尚可 尚未 尚好 尚平稳 尚需 尚无 尚清 符合 舒适
舒张 舒张压 纪要 梅毒 凌晨 毕业 单位 单纯 单侧 单次 单发 季节 霍乱 涂片 涂抹 成人 成功 成分
成形 谷丙 谷草 谷氨酰 曲线 曲马多 曲张 蓝色 游离 辛伐他汀 管床 管理 管道 管腔 管型 柴胡 蒙脱石
华法林 蒲地蓝 房颤 房间 房室 屈曲 解释 解痉 解除 解大便 解小便 解热 艾司唑仑 艾滋病 艾灸 尤其
阳性 时间 时有 时而 时感 时伴 农药 农民 吉非替尼 简单 简称 车祸 项目 连续 连接 芦荟 麦氏点 窦性
宫颈 宫腔 宫缩 费用 冷敷 冷汗 卫生 米索前列醇 桂枝 全身 全麻 全科 全血 全程 全部 全腹 应用 应激
应予 边缘 商议 沙丁胺醇 沙美特罗 巩膜 明显 明确 明日 明天 明晨 查体 查房 查看 查血 查见 查及
麻醉 麻木 迟缓 迟发 封闭 谈话 乐观 郁闷 储存 原发 原因 原有 原来 燕麦 劳累 劳动 劳力 皮肤 皮疹
皮下 皮质 楼梯 满意 闻及 位于 位置 伊曲康唑 伊马替尼 区域 海绵 花粉 强化 强度 强直 强烈 强阳性
巴比妥 丰富 支气管 支架 支持 国家 国内 国际 平素 平稳 平卧 平时 平均 平扫 平片 计划 计数 计量
索拉非尼 宣教 相关 相应 相同 初步 初诊 初次 门诊 门急诊 云南白药 容易 容量 来院 来诊 普通 普外科
普萘洛尔 伏立康唑 羊水 阿司匹林 阿莫西林 阿托伐他汀 阿托品 阿奇霉素 阿尔茨海默 阿昔洛韦 乌司他丁
母亲 母乳 修复 修补 鲜红 鲜血 印象 隆起 危险 危重 银屑病 亢进 公斤 利尿 利多卡因 利伐沙班 呼吸
居住 居家 干燥 干咳 干扰素 束支 信息 阴性 阴道 智力 植入 富含 闭合 闭塞 闭经 由于 步态 步行
赖氨酸 糜烂 铁蛋白 铁剂 习惯 胡言乱语 谢谢 石家庄 钟点 秦皮 江浙 章节 余量 余尿 戚属 谷氨酸
安排好 值班 实习 主管 床位 进修 于今 于昨 于当 于外院 于我院 于门诊 于局麻 于全麻 于本院 和缓 和蔼 有效 有无 有时 有关
生命 生活 生化 生理 生长 月经 月余 和平 能力 甘精胰岛素 钙剂 钾 宁心 宁神 常温下 温热 雷诺
儿童 儿科 妇女儿童 卓越 苗头 景象 展开 展示 冉冉 连日 连用 连服 连日来 双侧 双肺 双下肢 双手 双眼 双相 双歧杆菌
医疗 医院
""".split())

# Titles after a surname (李主任, 王医生, 张护士长): the surname alone is the name.
TITLES = (
    "主任医师", "副主任医师", "主治医师", "主任", "医生", "医师", "大夫", "护士长", "护士", "护师",
    "老师", "教授", "院长", "科长", "先生", "女士", "小姐", "阿姨", "师傅", "主治", "博士", "组长",
    "主管", "同志", "副主任", "副教授", "主管护师",
    # how a patient's relatives are addressed (家属施大爷)
    "大爷", "大妈", "大叔", "大婶",
)

# Titles that are also occupations (汽车维修技师): a surname before one is a person only after a
# boundary or a word that introduces someone (。车技师, 由葛技师).
OCCUPATION_TITLES = ("技师", "工程师", "技术员", "药师", "主管技师")

# Words after which a person is named, beyond NAME_BEFORE: the roles and signatures of
# clinical documents (术者, 一助, 检验者, 审核, 随访人, 其子, 签名…).
ROLE_WORDS = (
    "术者", "主刀", "一助", "二助", "三助", "助手", "第一助手", "第二助手", "器械护士", "巡回护士",
    "洗手护士", "麻醉医师", "麻醉医生", "麻醉师", "检验者", "检验人", "检验员", "检验师", "审核",
    "审核者", "审核人", "审核医师", "复核", "复核人", "核对", "核对人", "随访人", "随访者", "随访医生",
    "随访护士", "其子", "其女", "其妻", "其夫", "其父", "其母", "其兄", "其弟", "其姐", "其妹",
    "儿子", "女儿", "孙子", "孙女", "配偶", "签名", "医师签名", "医生签名", "护士签名", "患者签名",
    "家属签名", "签字", "家属签字", "记录人", "记录者", "报告者", "报告医师", "报告医生",
    "操作者", "操作医师", "会诊医师", "会诊医生", "申请医师", "申请医生", "转诊医师", "转诊医生",
    "接诊医师", "经治医师", "主管护士", "责任医生", "责任医师", "采样者", "采样人", "采集者", "送检者",
    "录入", "录入者", "授权人", "见证人", "陪诊", "陪同", "紧急联系人", "联系人", "监护人", "指导医师",
    "带教老师", "主诊医师", "值班医师", "值班医生", "值班护士", "管床医生", "管床医师", "主管医师",
    "参加人员", "参与人员", "出席人员", "讨论者", "主持人", "汇报人", "科主任", "护士长",
    "床位医生", "医生", "医师", "护士", "转出医师", "接收医师", "书写者", "书写医师", "评估者", "评估人",
    "执行者", "执行人", "宣教者", "患者", "病人", "患儿", "姓名", "家属", "丈夫", "妻子", "爱人",
    "父亲", "母亲", "哥哥", "姐姐", "弟弟", "妹妹", "朋友", "同事", "邻居", "介绍人", "委托人", "代理人",
    "申请人", "受检者", "检查者", "检查医师", "审批人", "批准人", "负责人", "讲解人", "上级医师",
    "住院医师", "主治医生", "主治医师", "主任医师", "副主任医师", "实习医生", "进修医生", "规培医生",
    "之妻", "之夫", "之子", "之女", "之父", "之母", "其孙", "其孙女", "老伴",
    # the person a document is about, by what the document does to them
    "受血者", "献血者", "受术者", "受试者", "被检者", "就诊者", "来访者", "患方", "产妇", "孕妇",
    "新生儿", "死者", "伤者", "陪检", "护送",
    # relatives, also after 其 and 由其 (其女儿 is read whole, not as 其女 + 儿)
    *(f"{pre}{rel}" for pre in ("", "其", "由其", "患者") for rel in (
        "女婿", "儿媳", "儿媳妇", "外孙", "外孙女", "孙子", "孙女", "侄子", "侄女", "外甥", "外甥女",
        "叔叔", "舅舅", "姑姑", "姨妈", "阿姨", "公公", "婆婆", "岳父", "岳母", "兄弟", "姐妹", "老公",
        "老婆", "亲属", "女儿", "儿子", "丈夫", "妻子", "配偶", "哥哥", "姐姐", "弟弟", "妹妹", "父亲",
        "母亲", "爱人")),
    "夜班", "白班", "中班", "夜班护士", "责任护士", "当班护士", "监护人为", "联系人为",
    # 记录 is a context word only with its colon: 交易记录包含… names no one
    "记录：", "记录:",
)

# Surnames that are prepositions first (由医生告知, 向医生反映): never read alone before a title.
PREPOSITION_SURNAMES = "于和由向但都来那应时相初从将把在以及与同当经"

# Characters that are function words as often as given-name characters. As the second given
# character they are taken only where the name clearly ends after them (签名：毛春和。),
# never before more text (李明有高血压, 王伟和李娜, 王伟于昨日).
FUNCTION_GIVEN = "于和与及在同自经从有来也今之知出入可能会应再又还均随带才仍即便就为"
# Given-name characters that also start words (生, 月, 士…): the second given character
# unless a clinical word starts with it.
SOFT_GIVEN = "生月士文本主年日先科现近"
# Never part of a given name here, whatever a name corpus says: particles, pronouns and the
# verbs that follow a name in a note (王伟陪同, 李娜诉, 张敏签字).
HARD_NOT_GIVEN = (
    "的了是被把将从对向等岁男女诉患病院号其她他它我你们这那某无不未已曾诊查术治疗服用药"
    "陪说称述示签去到回离转送请问答讲听看叫找让给做需该嘱行予"
)

# Parts of Tibetan, Mongolian and other minority names written without a surname (扎西多吉,
# 其其格, 乌云其木格): a run of two parts, or one part of three characters, is a name.
MINORITY_NAME_PARTS = tuple("""
扎西 多吉 次仁 卓玛 格桑 旺姆 达瓦 巴特尔 其其格 斯琴 高娃 阿古拉 索朗 平措 德吉 卓嘎 白玛 央宗
尼玛 拉姆 顿珠 琼达 格日勒 娜仁 图雅 朝鲁 苏和 宝音 额尔敦 那日苏 萨仁 乌云 其木格 旦增 罗布
强巴 边巴 普布 洛桑 曲珍 央金 措姆 仁增 桑吉 丹增 益西 群培 巴桑 米玛 格日乐 乌兰 图门 特木尔
宝力格 敖登 哈斯 阿拉坦 都兰 塔娜 吉日格拉 孟和 满都拉
""".split())

